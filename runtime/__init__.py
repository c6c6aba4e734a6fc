"""ember.runtime: executables, the arena and the kernel cache; build features (mx.runtime)."""
from .cache import install as _install_cache
from .features import Feature, Features, feature_list

_install_cache()  # generated kernels load from (and persist to) the on-disk cache

__all__ = ["Feature", "Features", "feature_list"]
