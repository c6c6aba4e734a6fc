"""ember.runtime: executables, the arena and the kernel cache; build features (mx.runtime)."""
from .cache import install as _install_cache
from .cache import warm_up_in_background as _warm_up
from .features import Feature, Features, feature_list

_install_cache()  # generated kernels load from (and persist to) the on-disk cache
_warm_up()  # numba's one-time registry set-up, off the first compiled call's path

__all__ = ["Feature", "Features", "feature_list"]
