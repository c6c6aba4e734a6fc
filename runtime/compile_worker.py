"""A worker process of :mod:`ember.runtime.precompile`: compiles kernels into the cache.

Reads one JSON job a line on stdin (``source``, ``backend``, ``func``, ``sigs``: a kernel
module's text as the parent's kernel cache verified it, the function to compile and the
lists of its argument types as :func:`~ember.runtime.precompile.type_spec` data), loads the module
through the kernel cache of ``$EMBER_CACHE_DIR`` (the same file and ``__pycache__`` as the
parent's), compiles the function for those types (numba's ``cache=True`` saves the machine
code, sealed) and answers ``ok`` or ``err <exception name>`` on stdout. Ends at end of
input.
"""
from __future__ import annotations

import json
import sys


def main() -> int:
    """Serve jobs until stdin closes."""
    from ember.backends import cpu_math  # noqa: F401 (numba's CPU features, as the parent's)
    from ember.runtime.cache import default_cache
    from ember.runtime.precompile import spec_type
    cache = default_cache()
    for line in sys.stdin:
        try:
            job = json.loads(line)
            mod = cache.load(job["source"], job["backend"])
            fn = getattr(mod, job["func"])
            for sig in job["sigs"]:
                fn.compile(tuple(spec_type(s) for s in sig))
            answer = "ok"
        except Exception as e:  # the parent's first call compiles it instead
            answer = f"err {type(e).__name__}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
