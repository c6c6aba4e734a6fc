"""The ``ember`` command: ``viz``, ``summary``, ``ir``, ``demo`` and ``launch`` (``ember CMD
--help``).

MODEL, for ``viz``, ``summary`` and ``ir``, is one of
- an MXNet symbol JSON file (``net-symbol.json``; give ``--input-shape`` for shapes; the
  parameter shapes come from ``net-NNNN.params`` next to it, the latest epoch, or ``--params``),
- an ember AOT package directory (``ember.export``; its shapes are in its manifest),
- ``module:callable``, a HybridBlock or a function returning one, with ``--input-shape``.

Exit status: 0 on success, 2 for usage errors, 1 for failures, which print one line
(``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


# ---- MODEL ----------------------------------------------------------------------------------
@dataclass
class Model:
    """What MODEL names: a Symbol, its input shapes, and (a package) its optimised graph."""

    name: str
    symbol: object
    shapes: dict | None
    planned: object = None  # the package's graph.ir, already through plan_memory
    params: dict | None = None  # parameter name -> shape, from a parameter file or manifest


def _parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {text!r}: expected positive dims like 1,784 or "
                         "data=1,784")
    return name or None, shape


def _shapes(specs: list[str] | None, names: list[str]) -> dict | None:
    """``--input-shape`` values (``1,784`` in input order, or ``name=1,784``) by input."""
    if not specs:
        return None
    out = {}
    for i, spec in enumerate(specs):
        name, shape = _parse_shape(spec)
        if name is None:
            if i >= len(names):
                raise UsageError(f"{len(specs)} --input-shape values for {len(names)} inputs "
                                 f"({', '.join(names)})")
            name = names[i]
        out[name] = shape
    return out


def _block_of(spec: str):
    """The HybridBlock ``module:callable`` names (a block, or a function returning one)."""
    from ember.gluon.block import HybridBlock
    mod_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    mod = importlib.import_module(mod_name)
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"MODEL {spec!r}: module {mod_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, HybridBlock) and callable(obj):
        obj = obj()
    if not isinstance(obj, HybridBlock):
        raise UsageError(f"MODEL {spec!r} is a {type(obj).__name__}, not a HybridBlock or "
                         "a function returning one")
    return obj


def _param_shapes(symbol_file: Path, params_file: str | None) -> dict | None:
    """Parameter shapes from ``params_file`` or, by default, the latest ``<stem>-NNNN.params``
    next to ``<stem>-symbol.json`` (None when there is none)."""
    from ember import ndarray as nd
    if params_file is None:
        stem = symbol_file.name.removesuffix(".json").removesuffix("-symbol")
        found = sorted(symbol_file.parent.glob(f"{glob_escape(stem)}-[0-9][0-9][0-9][0-9].params"))
        if not found:
            return None
        params_file = str(found[-1])
    loaded = nd.load(params_file)
    if not isinstance(loaded, dict):
        raise UsageError(f"--params {params_file}: holds an unnamed list of arrays")
    return {k.partition(":")[2] if k[:4] in ("arg:", "aux:") else k: v.shape
            for k, v in loaded.items()}


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters made literal."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def param_counts(model: Model) -> dict[str, int]:
    """Each op node's exact parameter count: the sizes of its weight arguments (auxiliary
    states such as BatchNorm's running statistics are not counted, as in MXNet's table),
    shapes from the parameter file or inferred from the input shapes. MXNetError naming
    the weights whose shapes are unknown."""
    import json
    import math

    from ember.base import MXNetError
    from ember.viz import data_names
    symbol, known = model.symbol, dict(model.params or {})
    args = symbol.list_arguments()
    data = set(model.shapes or ()) | set(data_names(symbol))
    weights = set(args) - data if model.params is None else \
        (set(args) - data) | (set(args) & set(known))
    if model.shapes is not None:
        given = {k: v for k, v in known.items() if k in args and k not in model.shapes}
        arg_shapes, _, _ = symbol.infer_shape(**given, **model.shapes)
        if arg_shapes is not None:
            known.update(zip(args, arg_shapes))
    nodes = json.loads(symbol.tojson())["nodes"]
    counts, unknown = {}, []
    for node in nodes:
        if node["op"] == "null":
            continue
        counts[node["name"]] = 0
        for src in (nodes[i[0]] for i in node["inputs"]):
            if src["op"] != "null" or src["name"] not in weights:
                continue
            if src["name"] in known:
                counts[node["name"]] += math.prod(known[src["name"]])
            elif src["name"] not in unknown:
                unknown.append(src["name"])
    if unknown:
        raise MXNetError(f"{model.name}: cannot count parameters, the shapes of "
                         f"{', '.join(unknown)} are unknown; give the input shapes "
                         "(--input-shape) or the parameter file (--params)")
    return counts


def load_model(spec: str, input_shapes: list[str] | None = None,
               params_file: str | None = None) -> Model:
    """Resolve MODEL (see the module docstring); ``params_file`` for a symbol JSON file."""
    import ember as mx
    from ember import autograd
    from ember.aot import read_manifest
    from ember.aot_read import member
    from ember.ir.printer import parse_graph
    from ember.viz import data_names
    path = Path(spec)
    if path.is_dir():
        manifest = read_manifest(path)
        symbol = mx.sym.load(str(member(path, "symbol.json")))
        shapes = {i["name"]: tuple(i["shape"]) for i in manifest["inputs"]}
        if input_shapes:
            raise UsageError("--input-shape does not apply to an AOT package: it was "
                             "compiled for " + ", ".join(f"{k}={v}" for k, v in shapes.items()))
        planned = parse_graph(member(path, "graph.ir").read_text())
        params = {p["name"]: tuple(p["shape"]) for p in manifest["params"]}
        return Model(manifest["name"], symbol, shapes, planned, params)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {spec}")
        symbol = mx.sym.load(str(path))
        name = path.stem.removesuffix("-symbol")
        return Model(name, symbol, _shapes(input_shapes, data_names(symbol)), None,
                     _param_shapes(path, params_file))
    if ":" not in spec:
        raise UsageError(f"MODEL {spec!r} is not a symbol JSON file, a package directory "
                         "or module:callable")
    if not input_shapes:
        raise UsageError(f"MODEL {spec}: give the input shapes (--input-shape 1,784)")
    block = _block_of(spec)
    names = ["data"] if len(input_shapes) == 1 else [f"data{i}" for i in
                                                     range(len(input_shapes))]
    shapes = _shapes(input_shapes, names)
    with autograd.pause(train_mode=False):
        symbol = block(*[mx.sym.var(n) for n in shapes])
    if isinstance(symbol, list | tuple):
        symbol = mx.sym.Group(list(symbol))
    return Model(block.name, symbol, shapes, None,
                 {p.name: p.shape for p in block.collect_params().values()
                  if p.shape and all(p.shape)})


def pass_names(after: str | None, grad: bool = False) -> list[str]:
    """The pipeline's passes up to and including ``after`` (``all``: every one)."""
    from ember.passes import pipeline
    names = pipeline(grad)
    if after in (None, "all"):
        return names
    if after == "trace":
        return []
    if after not in names:
        hint = " (add --grad)" if after in pipeline(True) else ""
        raise UsageError(f"--after {after}: not a pass of the pipeline{hint}; choose from "
                         f"trace, {', '.join(dict.fromkeys(names))}, all")
    return names[:names.index(after) + 1]


def run_passes(model: Model, after: str | None, grad: bool = False):
    """[(pass, ms, graph after it)] for MODEL; a package with no ``after`` gives its own
    optimised graph. Without input shapes no pass runs (the graph as declared)."""
    from ember.passes import run_pipeline
    from ember.viz import symbol_to_graph
    if model.planned is not None and after is None:
        return [("package", 0.0, model.planned)]
    graph = symbol_to_graph(model.symbol, model.shapes, model.name)
    steps = [("trace", 0.0, graph)]
    if model.shapes is None:  # the graph as the file declares it: nothing to infer from
        if after not in (None, "trace"):
            raise UsageError(f"--after {after} needs the input shapes: give --input-shape")
        return steps
    for name in pass_names(after if after is not None else "infer_shapes", grad):
        key = f"pass_ms.{name}"
        before = graph.meta.get(key, 0.0)
        graph = run_pipeline(graph, [name])
        steps.append((name, graph.meta.get(key, 0.0) - before, graph))
    return steps


def memory_line(graph) -> str | None:
    """The planner's figures of ``graph`` (None before ``plan_memory``)."""
    m = graph.meta
    if "arena_bytes" not in m:
        return None
    naive, low, arena = m.get("naive_bytes", 0), m.get("lower_bound_bytes", 0), m["arena_bytes"]
    share = f" ({100 * arena / naive:.1f}% of naive)" if naive else ""
    return f"# memory: naive {naive} B, lower bound {low} B, arena {arena} B{share}"


# ---- subcommands ----------------------------------------------------------------------------
def _viz(args) -> int:
    from ember.viz import graph_dot, render
    model = load_model(args.model, args.input_shape)
    graph = run_passes(model, args.after, args.grad)[-1][2]
    out = args.output or f"{model.name}.svg"
    text = graph_dot(graph, shapes=args.shapes, weights=args.show_weights,
                     collapse=args.collapse)
    path = render(text, out, dpi=args.dpi)
    print(f"wrote {path}")
    return 0


def _summary(args) -> int:
    from ember.viz import print_summary
    model = load_model(args.model, args.input_shape, args.params)
    counts = param_counts(model)
    print_summary(model.symbol, shape=model.shapes, line_length=args.line_length,
                  counts=counts)
    return 0


def _ir(args) -> int:
    from ember.ir.printer import print_graph
    model = load_model(args.model, args.input_shape)
    after = args.after if args.after or model.planned is not None else "all"
    steps = run_passes(model, after, args.grad)
    shown = steps[1:] if after == "all" else steps[-1:]
    if after != "all":
        for name, ms, _ in steps[1:]:
            print(f"# pass {name}: {ms:.3f} ms")
    for name, ms, graph in shown:
        head = "package graph.ir" if name == "package" else f"pass {name} ({ms:.3f} ms)"
        print(f"# ---- IR after {head} ----")
        print(print_graph(graph, meta=not args.no_meta), end="")
        mem = memory_line(graph)
        if mem:
            print(mem)
    return 0


def _demo(args) -> int:
    """Train the seed MLP on Fashion-MNIST (or, with --toy, a linear model on random data)."""
    if not args.toy:
        from ember.demo import run
        acc = run(epochs=args.epochs, hybridize=args.hybridize, data_dir=args.data,
                  num_workers=args.workers, out_dir=args.out)
        return 0 if acc >= 0.8 else 1
    from ember.demo import toy
    return toy(args.steps, args.lr, args.seed)


def _launch(args) -> int:
    """Run a training script on -n ranks through MPI (ember.kvstore.launch)."""
    from ember.kvstore.launch import launch
    return launch(args.n, args.program, args.hostfile)


def _prebuild(args) -> int:
    """Compile ember's library kernels for a cold kernel cache (ember.prebuild)."""
    from ember.prebuild import build
    build(Path(args.dir) if args.dir else None)
    return 0


# ---- argument parsing -----------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    parser = argparse.ArgumentParser(prog="ember", parents=[common],
                                     description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def model_parser(name, help):
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.add_argument("model", metavar="MODEL",
                       help="symbol JSON file, AOT package directory, or module:callable")
        p.add_argument("--input-shape", action="append", metavar="SHAPE",
                       help="input shape like 1,784 or data=1,784 (repeat per input)")
        return p

    viz = model_parser("viz", "draw a model's graph (DOT, SVG, PNG, PDF or HTML)")
    viz.add_argument("-o", "--output", metavar="FILE",
                     help="output file; its extension picks the format (default MODEL.svg)")
    viz.add_argument("--after", metavar="PASS",
                     help="draw the graph after this pass (fuse: fused groups as clusters; "
                          "plan_memory: arena offsets); default infer_shapes, a package's "
                          "own optimised graph for a package")
    viz.add_argument("--shapes", action=argparse.BooleanOptionalAction, default=True,
                     help="label edges with tensor types (default on)")
    viz.add_argument("--grad", action="store_true", help="include the autodiff passes")
    viz.add_argument("--show-weights", action="store_true", help="draw the parameters "
                     "(hidden by default, as in mx.viz.plot_network; listed in tooltips)")
    viz.add_argument("--collapse", metavar="DEPTH|REGEX", help="one box per block DEPTH levels "
                     "deep in the Gluon name scopes (2: ResNet stages) or whose scope matches "
                     "REGEX ('stage\\d+'), with its repeat count and op counts")
    viz.add_argument("--dpi", type=int, default=None, help="resolution of PNG output (96)")
    viz.set_defaults(fn=_viz)

    summ = model_parser("summary", "print the layer table (mx.viz.print_summary)")
    summ.add_argument("--line-length", type=int, default=120, help="table width")
    summ.add_argument("--params", metavar="FILE",
                      help="parameter file of a symbol JSON MODEL (default: the latest "
                           "NAME-NNNN.params next to NAME-symbol.json)")
    summ.set_defaults(fn=_summary)

    ir = model_parser("ir", "print the IR after compiler passes, with timings and memory")
    ir.add_argument("--after", metavar="PASS|all",
                    help="stop after this pass, or 'all' to print the IR after every pass "
                         "(the default; for a package: its own optimised graph)")
    ir.add_argument("--grad", action="store_true", help="include the autodiff passes")
    ir.add_argument("--no-meta", action="store_true", help="leave out '# meta:' lines")
    ir.set_defaults(fn=_ir)

    demo = sub.add_parser("demo", parents=[common], help="train the seed MLP and export it",
                          description="Train MXNet Gluon's Fashion-MNIST MLP on ember, export "
                                      "it and draw its graph into --out.")
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--hybridize", action=argparse.BooleanOptionalAction, default=True)
    demo.add_argument("--data", default=None, help="directory of Fashion-MNIST IDX files")
    demo.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    demo.add_argument("--out", default="demo-out", help="where to write the trained model")
    demo.add_argument("--toy", action="store_true", help="linear regression on random data")
    demo.add_argument("--steps", type=int, default=100)
    demo.add_argument("--lr", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(fn=_demo)

    pre = sub.add_parser("prebuild", parents=[common],
                         help="compile the kernels every network shares, for a cold cache",
                         description="Compile ember's library kernels (im2col, BatchNorm, the "
                                     "optimizers, common epilogues) into the install, so that "
                                     "a first step with an empty kernel cache need not "
                                     "(make does this after installing).")
    pre.add_argument("--dir", default=None, help="where to put them (default: the install)")
    pre.set_defaults(fn=_prebuild)

    launch = sub.add_parser("launch", parents=[common],
                            help="run a data-parallel training script on N processes (MPI)",
                            description="Start SCRIPT on N ranks with MPI's mpiexec "
                                        "(pip install 'ember[dist]'); the job fails as soon "
                                        "as one rank fails.")
    launch.add_argument("-n", "--np", dest="n", type=int, default=2, help="number of ranks")
    launch.add_argument("--hostfile", default=None,
                        help="MPI hostfile of the machines to run on (default: this one)")
    launch.add_argument("program", nargs=argparse.REMAINDER, metavar="SCRIPT [ARGS...]",
                        help="the training script and its arguments (or -m MODULE ...)")
    launch.set_defaults(fn=_launch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ember`` command; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as e:
        if args.debug:
            raise
        print(f"ember {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for users; --debug shows the traceback
        if args.debug:
            raise
        msg = str(e).strip().splitlines()
        print(f"ember {args.cmd}: {type(e).__name__}: {msg[0] if msg else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
