"""Source-image signatures: formats (types), checks (pubkey, keyless), orchestration (source)."""
