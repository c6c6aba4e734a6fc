"""ember.runtime: executables, the arena and the kernel cache; build features (mx.runtime)."""
from .features import Feature, Features, feature_list

__all__ = ["Feature", "Features", "feature_list"]
