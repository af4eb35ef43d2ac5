"""``extensions.yaml`` (upstream ``extensions.Config``) and the ``embedded-config`` virtual extension.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/extensions/config.go`` for the YAML, and
the imager's embedded machine configuration (Talos ≥1.12) for the virtual extension, whose tar is
written entry for entry in upstream's order.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

from common.artifacts.unpack import SELINUX_XATTR
from common.schematic.emit import Struct, marshal_value
from worker.imager import tar
from worker.imager.extensions.manifest import MANIFEST, MANIFEST_VERSION, ROOTFS, Metadata

__all__ = [
    "EMBEDDED_CONFIG",
    "EMBEDDED_CONFIG_PATH",
    "STATE_SELINUX_LABEL",
    "embedded_config_extension",
    "extensions_yaml",
]

EMBEDDED_CONFIG = "embedded-config"
#: ``constants.EmbeddedConfigDirectory`` + ``ConfigFilename`` and ``StateSelinuxLabel``.
EMBEDDED_CONFIG_PATH = "usr/local/etc/talos/config.yaml"
STATE_SELINUX_LABEL = "system_u:object_r:system_state_t:s0"


def extensions_yaml(layers: Sequence[tuple[str, Metadata]]) -> bytes:
    """``extensions.Config`` as go-yaml encodes it: ``layers: [{image, metadata}]``."""
    items = [Struct((("image", image), ("metadata", md.to_struct()))) for image, md in layers]
    return marshal_value(Struct((("layers", items),)))


def embedded_config_extension(config: bytes) -> bytes:
    """The imager's ``embedded-config`` virtual extension tar (Talos ≥1.12), entries in upstream's order."""
    manifest = marshal_value(
        Struct(
            (
                ("version", MANIFEST_VERSION),
                (
                    "metadata",
                    Metadata(
                        name=EMBEDDED_CONFIG,
                        version=hashlib.sha256(config).hexdigest(),
                        author="Imager",
                        description="Virtual extension which embeds the machine configuration.",
                        compatibility=">= 1.0.0",
                    ).to_struct(),
                ),
            )
        )
    )
    buffer = io.BytesIO()
    writer = tar.TarWriter(buffer, tar.PAX)
    writer.add(tar.Member(MANIFEST, tar.REGTYPE, 0o644, len(manifest)), manifest)
    parts = EMBEDDED_CONFIG_PATH.split("/")[:-1]
    for i in range(len(parts) + 1):
        writer.add(tar.Member("/".join([ROOTFS, *parts[:i]]), tar.DIRTYPE, 0o755))
    writer.add(
        tar.Member(
            f"{ROOTFS}/{EMBEDDED_CONFIG_PATH}",
            tar.REGTYPE,
            0o400,
            len(config),
            pax={SELINUX_XATTR: STATE_SELINUX_LABEL},
        ),
        config,
    )
    writer.close()
    return buffer.getvalue()
