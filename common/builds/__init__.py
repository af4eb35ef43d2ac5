"""Builds shared by API and workers: request → plan, build state in Redis, waiting for a result."""
