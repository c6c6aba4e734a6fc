"""unary ops (being written)."""
