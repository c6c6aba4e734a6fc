"""gather ops (being written)."""
