"""The embedded-config virtual extension."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from worker.imager.extensions.config import embedded_config_extension


def test_embedded_config_extension(tmp_path: Path) -> None:
    config = b"version: v1alpha1\nmachine:\n  type: worker\n"
    data = embedded_config_extension(config)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert [(m.name, m.type, m.mode) for m in members] == [
            ("manifest.yaml", tarfile.REGTYPE, 0o644),
            ("rootfs", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/etc", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/etc/talos", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/etc/talos/config.yaml", tarfile.REGTYPE, 0o400),
        ]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
        config_member = members[-1]
        assert (
            config_member.pax_headers["SCHILY.xattr.security.selinux"]
            == "system_u:object_r:system_state_t:s0"
        )
        stored = archive.extractfile(config_member)
        assert stored is not None and stored.read() == config
        manifest_file = archive.extractfile(members[0])
        assert manifest_file is not None
        assert manifest_file.read().decode() == (
            "version: v1alpha1\n"
            "metadata:\n"
            "    name: embedded-config\n"
            f"    version: {hashlib.sha256(config).hexdigest()}\n"
            "    author: Imager\n"
            "    description: Virtual extension which embeds the machine configuration.\n"
            "    compatibility:\n"
            "        talos:\n"
            "            version: '>= 1.0.0'\n"
        )
