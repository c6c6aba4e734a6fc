"""``mx.model``: checkpoint helpers of MXNet's legacy training API (they live in ember.module)."""
from ember.module import BatchEndParam, load_checkpoint, load_params, save_checkpoint

__all__ = ["BatchEndParam", "load_checkpoint", "load_params", "save_checkpoint"]
