"""budget context (being written)."""
