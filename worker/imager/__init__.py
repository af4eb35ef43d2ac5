"""The imager: Talos boot assets from the release payload, extensions and a profile.

A Python port of the Talos ``pkg/imager`` logic (v1.14 plus the per-version quirks), built from
plain files and standard Debian tools: no loop devices, mounts, root or container runtime.
"""
