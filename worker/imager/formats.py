"""Disk format conversion of a raw disk image: qcow2, VHD and OVA (``pkg/imager/out.go``, ``ova/ova.go``).

Upstream runs ``qemu-img convert`` for qcow2/VHD and, for OVA, turns the disk into a stream-optimized
VMDK and tars it with an OVF descriptor and a manifest. Two things differ here on purpose:

* qemu-img writes a random CID into a VMDK and the wall-clock time plus a random UUID into a VHD
  footer. Those fields are rewritten from the release epoch and a digest of the disk content, so the
  same build always gives the same bytes.
* Talos ≥1.11 makes the VMDK with open-vmdk's ``vmdk-convert``, which Debian bookworm does not ship;
  every version gets the qemu-img VMDK that Talos ≤1.10 produced
  (``compat6,subformat=streamOptimized,adapter_type=lsilogic``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.profile.model import DiskFormat, ImageOptions
from common.talos.quirks import Quirks
from worker.imager import tar, tools
from worker.imager.sparse import nonzero_blocks

__all__ = ["convert", "ovf_xml", "qemu_img_info"]

MIB = 1 << 20

#: What Talos < 1.11 passed to qemu-img for the OVA's disk (later versions use vmdk-convert).
VMDK_OPTIONS = "compat6,subformat=streamOptimized,adapter_type=lsilogic"

#: VHD timestamps count seconds from 2000-01-01T00:00:00Z.
_VHD_EPOCH = 946684800
_VHD_COOKIE = b"conectix"
_VHD_FOOTER = 512

_DIGEST_BLOCK = 64 * 1024


@dataclass(frozen=True)
class _Job:
    """One conversion: the raw image, the output path, and what shapes the output."""

    raw: Path
    out: Path
    image_options: ImageOptions
    platform: str
    arch: str
    workdir: Path
    epoch: int
    quirks: Quirks


def _to_qcow2(job: _Job) -> None:
    _qemu_convert(job.raw, job.out, "qcow2", job.image_options.disk_format_options)


def _to_vhd(job: _Job) -> None:
    """qemu-img's ``vpc``, then the footer's time and UUID pinned (qemu-img writes them at random)."""
    _qemu_convert(job.raw, job.out, "vpc", job.image_options.disk_format_options)
    _pin_vhd_footer(job.out, job.epoch, _content_digest(job.raw))


def _to_ova_job(job: _Job) -> None:
    _to_ova(job.raw, job.out, job.image_options, job.platform, job.arch, job.workdir, job.epoch, job.quirks)


#: How each disk format is made from the raw image; ``None``: the raw image is the output (``unknown``
#: is rejected by validation before a build). A new format is one entry here.
CONVERTERS: dict[DiskFormat, Callable[[_Job], None] | None] = {
    DiskFormat.UNKNOWN: None,
    DiskFormat.RAW: None,
    DiskFormat.QCOW2: _to_qcow2,
    DiskFormat.VPC: _to_vhd,
    DiskFormat.OVA: _to_ova_job,
}


def convert(
    raw: Path,
    image_options: ImageOptions,
    *,
    platform: str,
    arch: str,
    workdir: Path,
    epoch: int,
    quirks: Quirks | None = None,
) -> Path:
    """Converts ``<name>.raw`` to ``<name>.<qcow2|vhd|ova>`` next to it and removes the raw file.

    raw (and unknown, which validation rejects earlier) needs no conversion: ``raw`` is returned as is.
    ``quirks`` (the target Talos version; latest if omitted) only shapes the OVA's descriptor.
    On failure the raw file is kept and no output is left behind.
    """
    fmt = image_options.disk_format
    converter = CONVERTERS[fmt]
    if converter is None:
        return raw
    out = raw.with_suffix("." + fmt.value)
    if out == raw:
        raise ValueError(f"{raw} already has the {fmt.value} suffix")
    job = _Job(raw, out, image_options, platform, arch, workdir, epoch, quirks or Quirks(""))
    try:
        converter(job)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    raw.unlink()
    return out


def qemu_img_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json``: format, virtual size and format-specific details.

    Give ``fmt`` for fixed VHDs: qemu only probes for the footer copy at the start, which they lack.
    """
    cmd: list[str | os.PathLike[str]] = ["qemu-img", "info", "--output=json"]
    if fmt:
        cmd += ["-f", fmt]
    info: dict[str, Any] = json.loads(tools.run([*cmd, path]))
    return info


def _qemu_convert(src: Path, dst: Path, out_format: str, options: str) -> None:
    """Upstream always passes ``-o <options>``; qemu-img rejects an empty ``-o``, so it is left out."""
    cmd: list[str | os.PathLike[str]] = ["qemu-img", "convert", "-f", "raw", "-O", out_format]
    if options:
        cmd += ["-o", options]
    tools.run([*cmd, src, dst])


def _content_digest(path: Path) -> bytes:
    """SHA-256 over the disk's non-zero 64 KiB blocks and their offsets.

    Only allocated extents are read (a sparse 8 GiB disk costs what its data costs), and all-zero
    blocks are skipped, so the digest depends on the content alone, not on how the file is allocated.
    """
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for offset, data in nonzero_blocks(fd, size, _DIGEST_BLOCK):
            digest.update(offset.to_bytes(8, "little"))
            digest.update(data)
    finally:
        os.close(fd)
    digest.update(size.to_bytes(8, "little"))
    return digest.digest()


def _hashed_uuid(*parts: bytes) -> bytes:
    """16 bytes from SHA-256 with RFC 9562 version 8 / variant bits, like ``GUIDFromLabel``."""
    raw = bytearray(hashlib.sha256(b"\0".join(parts)).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def _vhd_checksum(footer: bytes | bytearray) -> int:
    """One's complement of the byte sum, taken with the checksum field (offset 64) zeroed."""
    return ~(sum(footer[:64]) + sum(footer[68:])) & 0xFFFFFFFF


def _pin_vhd_footer(path: Path, epoch: int, digest: bytes) -> None:
    """Replaces qemu-img's "now" timestamp and random unique id in the VHD footer.

    The footer is the last 512 bytes; dynamic VHDs also carry a copy at offset 0 (fixed ones do not).
    """
    stamp = min(max(epoch - _VHD_EPOCH, 0), 0xFFFFFFFF)
    unique_id = _hashed_uuid(b"image-factory vhd", digest, str(epoch).encode())
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - _VHD_FOOTER)
        footer = bytearray(f.read(_VHD_FOOTER))
        if footer[:8] != _VHD_COOKIE:
            raise tools.ToolError(f"qemu-img wrote no VHD footer to {path.name}")
        struct.pack_into(">I", footer, 24, stamp)
        footer[68:84] = unique_id
        struct.pack_into(">I", footer, 64, _vhd_checksum(footer))
        offsets = [size - _VHD_FOOTER]
        f.seek(0)
        if f.read(8) == _VHD_COOKIE:
            offsets.append(0)
        for offset in offsets:
            f.seek(offset)
            f.write(footer)


_CID_LINE = re.compile(rb"^CID=[0-9a-fA-F]+$", re.MULTILINE)


def _set_vmdk_cid(f: io.BufferedRandom, cid: int) -> None:
    """Rewrites the ``CID=`` line of the descriptor embedded in a monolithic sparse VMDK."""
    f.seek(0)
    header = f.read(512)
    magic, _, _, _, _, desc_sector, desc_sectors = struct.unpack_from("<4sIIQQQQ", header)
    if magic != b"KDMV" or desc_sectors == 0:
        raise tools.ToolError("qemu-img wrote a VMDK without an embedded descriptor")
    f.seek(desc_sector * 512)
    region = f.read(desc_sectors * 512)
    text = region.split(b"\0", 1)[0]
    text, found = _CID_LINE.subn(b"CID=%08x" % cid, text, count=1)
    if not found:
        raise tools.ToolError("the VMDK descriptor has no CID line")
    f.seek(desc_sector * 512)
    f.write(text.ljust(len(region), b"\0"))


def _pin_vmdk_cid(path: Path, epoch: int) -> None:
    """Replaces qemu-img's random content id with one hashed from the VMDK itself (CID zeroed)."""
    with open(path, "r+b") as f:
        _set_vmdk_cid(f, 0)
        f.flush()
        f.seek(0)
        digest = hashlib.file_digest(f, "sha256").digest()
        cid = int.from_bytes(hashlib.sha256(digest + str(epoch).encode()).digest()[:4], "big")
        if cid >= 0xFFFFFFFE:  # ffffffff means "no parent" in parentCID; keep clear of it
            cid &= 0x7FFFFFFF
        _set_vmdk_cid(f, cid)


@dataclass(frozen=True)
class _OvfStyle:
    """What the target Talos version's OVF template said."""

    capacity_in_mib: bool  # 1.5.0 wrote bytes while claiming "byte * 2^20"
    vmx: int  # virtual hardware version
    enable_uuid: bool  # disk.EnableUUID extra config


def _ovf_style(quirks: Quirks) -> _OvfStyle:
    v = quirks.version
    if v is None:  # unparsable = latest
        return _OvfStyle(capacity_in_mib=True, vmx=15, enable_uuid=True)
    return _OvfStyle(
        capacity_in_mib=v >= (1, 5, 1), vmx=15 if v >= (1, 7, 1) else 13, enable_uuid=v >= (1, 12, 0)
    )


def _member_base(quirks: Quirks, platform: str, arch: str) -> str:
    """OVA members are ``disk.*`` from 1.5.2; 1.5.0/1.5.1 named them ``<platform>-<arch>.*``."""
    v = quirks.version
    return "disk" if v is None or v >= (1, 5, 2) else f"{platform}-{arch}"


# Talos' template (pkg/imager/ova), byte for byte, placeholders in braces.
_OVF_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by VMware ovftool 4.3.0 (build-7948156), UTC time: 2019-10-31T01:41:10.540841Z-->
<!-- Edited by Talos -->
<Envelope vmw:buildId="build-7948156" xmlns="http://schemas.dmtf.org/ovf/envelope/1" \
xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" \
xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" \
xmlns:vmw="http://www.vmware.com/schema/ovf" \
xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{vmdk}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" \
ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <Name>talos</Name>
    <ProductSection ovf:required="false">
      <Info>Talos Virtual Appliance</Info>
      <Property ovf:userConfigurable="true" ovf:type="string"
                ovf:key="talos.config" ovf:value="">
        <Label>Talos config data</Label>
        <Description>Inline Talos config</Description>
      </Property>
    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other3xLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>talos</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-{vmx}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>scsiController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>2</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;VM Network&quot;</rasd:Description>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="slotInfo.pciSlotNumber" vmw:value="32"/>
        <vmw:Config ovf:required="false" vmw:key="wakeOnLanEnabled" vmw:value="false"/>
        <vmw:Config ovf:required="false" vmw:key="connectable.allowGuestControl" vmw:value="false"/>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>video</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>vmci</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.vmci</rasd:ResourceSubType>
        <rasd:ResourceType>1</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterPowerOn" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterResume" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestShutdown" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestStandby" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.toolsUpgradePolicy" vmw:value="manual"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.suspendType" vmw:value="soft"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="talos.nvram"/>
{enable_uuid}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""

_ENABLE_UUID = '      <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="true"/>\n'


def ovf_xml(vmdk_name: str, vmdk_size: int, disk_size: int, quirks: Quirks | None = None) -> str:
    """The OVF descriptor the target version's imager writes; capacity is in MiB, as upstream's."""
    style = _ovf_style(quirks or Quirks(""))
    return _OVF_TEMPLATE.format(
        vmdk=vmdk_name,
        size=vmdk_size,
        capacity=disk_size // MIB if style.capacity_in_mib else disk_size,
        vmx=style.vmx,
        enable_uuid=_ENABLE_UUID if style.enable_uuid else "",
    )


def _member(name: str, size: int, epoch: int) -> tar.Member:
    """A root-owned 0644 regular file stamped with the release epoch (``tarfile.GNU_FORMAT``'s bytes)."""
    return tar.Member(name, tar.REGTYPE, 0o644, size, mtime=epoch, uname="root", gname="root")


def _to_ova(
    raw: Path,
    out: Path,
    image_options: ImageOptions,
    platform: str,
    arch: str,
    workdir: Path,
    epoch: int,
    quirks: Quirks,
) -> None:
    """VMDK + OVF + manifest in a tar, members in upstream's order: .ovf, .mf, .vmdk."""
    base = _member_base(quirks, platform, arch)
    scratch = workdir / "ova"
    scratch.mkdir(parents=True, exist_ok=True)
    names = [f"{base}.{ext}" for ext in ("ovf", "mf", "vmdk")]
    vmdk = scratch / names[2]
    try:
        tools.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", VMDK_OPTIONS, raw, vmdk])
        _pin_vmdk_cid(vmdk, epoch)
        vmdk_size = vmdk.stat().st_size
        disk_size = image_options.disk_size or raw.stat().st_size
        ovf = ovf_xml(names[2], vmdk_size, disk_size, quirks).encode()
        with open(vmdk, "rb") as f:
            vmdk_sha = hashlib.file_digest(f, "sha256").hexdigest()
        mf = f"SHA256({names[2]})= {vmdk_sha}\nSHA256({names[0]})= {hashlib.sha256(ovf).hexdigest()}\n"
        with open(out, "wb") as stream:
            writer = tar.TarWriter(stream, tar.GNU)
            writer.add(_member(names[0], len(ovf), epoch), ovf)
            writer.add(_member(names[1], len(mf), epoch), mf.encode())
            writer.add_file(_member(names[2], vmdk_size, epoch), vmdk)
            writer.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            vmdk.unlink()
