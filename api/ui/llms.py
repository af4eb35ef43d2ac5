"""``GET /llms.txt`` (upstream has one): how an agent uses this factory, in plain text."""

from __future__ import annotations

_TEXT = """\
# Talos Linux Image Factory

> Builds Talos Linux boot assets (ISOs, disk images, kernels, installer images) for a schematic:
> a YAML document of system extensions, kernel arguments, META values, an overlay (single-board
> computers) and boot options. A schematic's ID is the sha256 of its canonical YAML, identical to
> factory.talos.dev's, so IDs can be shared with talosctl, Omni and Terraform.

## Steps

1. Pick a Talos version: `GET {base}/versions` (JSON list of tags, e.g. "v1.12.4").
2. Pick extensions and overlays offered for that version:
   `GET {base}/version/<version>/extensions/official` (name, ref, digest, author, description),
   `GET {base}/version/<version>/overlays/official` (name, image, ref, digest).
3. Create the schematic: `POST {base}/schematics` with the YAML body; the answer is 201 (or 200 when
   it existed) with `{{"id": "<64 hex>", "schematic": "<canonical YAML>"}}`.
   `GET {base}/schematics/<id>` returns the canonical YAML.
4. Download assets: `GET {base}/image/<id>/<version>/<path>`. A missing asset is built on request;
   the request waits for it, or answers 503 with Retry-After when the wait runs out (retry).
   With `Prefer: respond-async` the answer is 202 at once with `Location: /builds/<key>`;
   `GET {base}/builds/<key>` reports status, stage, progress, queue position and ETA.

## Schematic format

```yaml
overlay:                      # single-board computers only
  image: siderolabs/sbc-raspberrypi
  name: rpi_generic
  options: {{}}                 # free-form, passed to the overlay
customization:
  extraKernelArgs: [console=ttyS0]
  meta:
    - key: 10
      value: "..."
  systemExtensions:
    officialExtensions: [siderolabs/gvisor]
  bootloader: sd-boot         # auto (omit), sd-boot, grub, dual-boot (Talos >= 1.12)
  secureboot:
    includeWellKnownCertificates: true
```

## Asset paths (<arch> is amd64 or arm64, <platform> e.g. metal, aws, gcp, nocloud)

- `kernel-<arch>`, `initramfs-<arch>.xz`, `cmdline-<platform>-<arch>`
- `<platform>-<arch>.iso`, `<platform>-<arch>-secureboot.iso`
- `<platform>-<arch>-uki.efi`, `<platform>-<arch>-secureboot-uki.efi`
- disk images `<platform>-<arch>[-secureboot].<raw|qcow2|vhd|ova>[.xz|.gz|.zst|.tar.gz]`
- installer tarballs `installer-<arch>.tar`, `<platform>-installer-<arch>.tar`
- PXE: `GET {base}/pxe/<id>/<version>/<platform>-<arch>[-secureboot]` (an iPXE script)
- installer images for `talosctl upgrade`: `<host>/<platform>-installer[-secureboot]/<id>:<version>`
  (Talos >= 1.10; `<host>/installer/<id>:<version>` before), served by the registry at `/v2/`.
- talosctl binaries: `GET {base}/talosctl/<version>/talosctl-<os>-<arch>[.exe]`

## More

- OpenAPI document: {base}/openapi.json
- Secure Boot signing certificate: {base}/secureboot/signing-cert.pem
- Cache signing key (cosign): {base}/oci/cosign/signing-key.pub
- The web UI: {base}/
"""


def llms_txt(base: str) -> str:
    return _TEXT.format(base=base.rstrip("/"))
