"""``python -m bench [name ...] [-- options]``: run the named benchmarks (default: all)."""
import importlib
import sys

from bench import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    """Run each requested benchmark with the options after ``--``; non-zero on failure."""
    argv = sys.argv[1:] if argv is None else argv
    names, opts = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or list(BENCHMARKS):
        print(f"== {name}")
        status |= importlib.import_module(BENCHMARKS[name]).main(opts)
    return status


if __name__ == "__main__":
    sys.exit(main())
