"""What the factory knows about Talos releases by version: parsing (``version``) as upstream's Go
semver does, which tags to offer, and every per-version behaviour switch (``quirks``)."""
