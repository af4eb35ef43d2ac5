"""Talos imager profiles: the model, asset-path parsing, built-in defaults, version quirks, and the
imager's own default filling and validation."""

from common.profile.fill import ProfileInvalidError, fill_defaults, final_output_name, output_name, validate
from common.profile.model import (
    Bootloader,
    ContainerAsset,
    Customization,
    DiskFormat,
    FileAsset,
    ImageOptions,
    Input,
    ISOOptions,
    MetaValue,
    OutFormat,
    Output,
    OutputKind,
    Overlay,
    Profile,
    SDBootEnrollKeys,
    SecureBootAssets,
    SigningKey,
    SigningKeyAndCertificate,
)
from common.profile.path import go_quote, installer_profile, parse_path
from common.talos.quirks import Quirks

__all__ = [
    "Bootloader",
    "ContainerAsset",
    "Customization",
    "DiskFormat",
    "FileAsset",
    "ISOOptions",
    "ImageOptions",
    "Input",
    "MetaValue",
    "OutFormat",
    "Output",
    "OutputKind",
    "Overlay",
    "Profile",
    "ProfileInvalidError",
    "Quirks",
    "SDBootEnrollKeys",
    "SecureBootAssets",
    "SigningKey",
    "SigningKeyAndCertificate",
    "fill_defaults",
    "final_output_name",
    "go_quote",
    "installer_profile",
    "output_name",
    "parse_path",
    "validate",
]
