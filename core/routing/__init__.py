"""routing context (being written)."""
