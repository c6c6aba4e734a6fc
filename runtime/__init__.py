"""ember.runtime: executables, the arena and the kernel cache; build features (mx.runtime)."""
from ember.backends import cpu_tiered as _tiered

from .blas_core import prefer_avx2_kernels as _prefer_avx2_kernels

_prefer_avx2_kernels()  # OpenBLAS's AVX2 kernels on Zen 4 (see runtime/blas_core.py)

from .cache import install as _install_cache
from .cache import warm_up_in_background as _warm_up
from .features import Feature, Features, feature_list
from .precompile import deferred_worker as _deferred_worker
from .thread_pools import forget_load as _forget_load

_install_cache()  # generated kernels load from (and persist to) the on-disk cache
_warm_up()  # numba's one-time registry set-up, off the first compiled call's path
# kernels compiled in the background (backends.cpu_tiered) compile in a worker process
_tiered.set_compile_worker(_deferred_worker, _forget_load)

__all__ = ["Feature", "Features", "feature_list"]
