"""``python -m bench [name ...] [options]``: run the named benchmarks (default: all), then
print the summary of the targets. Options (``--quick``, ``--backend``, ``--no-torch`` ...)
go to every benchmark; a ``--`` separator before them is accepted too."""
import os
import sys
import time

if __package__ in (None, ""):  # `python bench/__main__.py`: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402  (stdlib only: threads are pinned before numpy loads)

common.pin_threads()

import importlib  # noqa: E402

from bench import BENCHMARKS  # noqa: E402

_VALUED = ("--backend", "--repeat", "--mxnet-python", "--timeout", "--number")  # take a value


def main(argv: list[str] | None = None) -> int:
    """Run each requested benchmark with the options; non-zero on failure."""
    argv = sys.argv[1:] if argv is None else argv
    names, opts, it = [], [], iter(a for a in argv if a != "--")
    for a in it:
        if a.startswith("-"):
            opts.append(a)
            if "=" not in a and a in _VALUED:
                opts.append(next(it, ""))
        else:
            names.append(a)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    common.clear_summary()
    status, tic = 0, time.perf_counter()
    for name in names or list(BENCHMARKS):
        print(f"\n== {name}", flush=True)
        module, func = BENCHMARKS[name].split(":")
        start = time.perf_counter()
        status |= getattr(importlib.import_module(module), func)(opts)
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(common.summary())
    print(f"(total {time.perf_counter() - tic:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
