"""System extensions for the initramfs: loading, compatibility, per-extension squashfs and ``modules.dep``.

Follows Talos v1.14.0-rc.1 (``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/extensions``,
``internal/pkg/extensions``, ``pkg/imager/extensions``) with the target version's quirks, rootless
and without touching the extension trees (they are shared, read-only caches): what upstream *moves*
out of an extension (microcode, firmware) is copied into the staging tree and left out of the
squashfs instead. One module per concern:

* :mod:`.manifest` - ``manifest.yaml`` (as go-yaml reads it) and :class:`~.manifest.Metadata`;
* :mod:`.ranges` - blang/semver's version-range language the manifests' constraints are written in;
* :mod:`.loading` - extension sources, ``extensions.Load`` and the compatibility check;
* :mod:`.rootfs` - paths inside an extension rootfs (symlinks resolved as if chrooted) and copies out;
* :mod:`.squashfs` - the per-extension squashfs (``Extension.Compress``: microcode, firmware, tar2sqfs);
* :mod:`.modules` - the combined ``modules.dep`` layer (depmod);
* :mod:`.config` - ``extensions.yaml`` and the ``embedded-config`` virtual extension.
"""
