"""cosign's formats and checks in one package.

``registry`` reads and writes cosign's registry layouts (legacy ``sha256-<hex>.sig`` tags and
Sigstore bundles attached as referrers); ``types`` holds the signature shapes and the simple-signing
payload; ``pubkey`` and ``keyless`` check signatures against a key or a Fulcio identity; ``source``
chooses the checks from configuration for the Talos release sources.
"""
