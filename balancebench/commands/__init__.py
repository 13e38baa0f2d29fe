"""CLI command groups: each module is a few lines per command calling the library."""
