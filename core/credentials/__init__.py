"""credentials context (being written)."""
