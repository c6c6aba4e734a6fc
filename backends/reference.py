"""The reference backend: a NumPy interpreter of the IR, node by node (DESIGN.md s.6).

Every op's registry kernel ``compute(arrays, attrs)`` runs in graph order over an
environment mapping Values to arrays (torch.fx's ``Interpreter``, JAX's ``eval_jaxpr``).
It is the oracle every other backend is tested against, so it checks what it can: argument
shapes and dtypes against the graph's types, and each kernel's results against its node's
inferred types. Kernels that update inputs in place (BatchNorm's moving statistics,
optimizer states; ``op.mutated``) write straight into the arrays they are given, so the
parameter arrays a caller passes are updated in place, as MXNet's executors do.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.errors import EmberError, fmt_shapes
from ember.ir.graph import Graph, Node, Value
from ember.ir.types import TensorType

Compiled = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], list[np.ndarray]]
# monitor(node, input arrays, output arrays or None): called before (None) and after each node
Monitor = Callable[[Node, list, "list | None"], None]


def _fits(t: TensorType, a: np.ndarray) -> bool:
    if t.dtype != a.dtype.name:
        return False
    if t.shape is None:
        return True
    return len(t.shape) == a.ndim and all(d is None or d == s for d, s in zip(t.shape, a.shape))


def _describe(t: TensorType) -> str:
    return "(*)" if t.shape is None else fmt_shapes([t.shape])


def _bind(env: dict, graph: Graph, values: list[Value], arrays, kind: str) -> list:
    """Put the caller's arrays in ``env``, checked against the graph's types."""
    arrays = list(arrays)
    if len(arrays) != len(values):
        raise EmberError(f"graph {graph.name} takes {len(values)} {kind}s, got {len(arrays)}")
    bound = []
    for i, (v, a) in enumerate(zip(values, arrays)):
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        if not _fits(v.type, a):
            name = v.name_hint or f"#{i}"
            raise EmberError(f"graph {graph.name}: {kind} {name!r} expects shape "
                             f"{_describe(v.type)} {v.type.dtype}, got shape "
                             f"{fmt_shapes([a.shape])} {a.dtype.name}")
        env[v] = a
        bound.append(a)
    return bound


def _run_node(node: Node, ins: list[np.ndarray]) -> list[np.ndarray]:
    """One node's output arrays: its fused body interpreted, or its op's kernel."""
    body = node.body
    if body is not None:
        # a fused group: the node's inputs bind its body's inputs, then its params
        slots = [*body.inputs, *body.params]
        if len(slots) != len(ins):
            raise EmberError(f"fused node {node.name}: its body takes {len(slots)} "
                             f"values, the node gives {len(ins)}")
        env = dict(zip(slots, ins))
        _interpret(body, env)
        res = [env[v] for v in body.outputs]
    else:
        attrs = node.attr_dict
        try:
            out = node.op.compute(ins, attrs)
        except EmberError:
            raise
        except Exception as e:  # a NumPy complaint becomes the op's own error
            where = f" (at {node.loc})" if node.loc else ""
            raise EmberError(f"{node.op.name}{where}: {e} (input shapes "
                             f"{fmt_shapes([a.shape for a in ins])})") from e
        res = list(out) if isinstance(out, tuple | list) else [out]
    if len(res) != len(node.outputs):
        raise EmberError(f"{node.op.name}: kernel gave {len(res)} outputs, the node has "
                         f"{len(node.outputs)}")
    res = [r if isinstance(r, np.ndarray) else np.asarray(r) for r in res]
    for v, r in zip(node.outputs, res):
        if v.type.shape is not None and not _fits(v.type, r):  # rank unknown: rule not run
            raise EmberError(f"{node.op.name}: its shape rule says {_describe(v.type)} "
                             f"{v.type.dtype}, its kernel gave {fmt_shapes([r.shape])} "
                             f"{r.dtype.name}")
    return res


def _interpret(graph: Graph, env: dict, monitor: Monitor | None = None) -> None:
    for node in graph.nodes:
        try:
            ins = [env[v] for v in node.inputs]
        except KeyError:
            raise EmberError(f"graph {graph.name}: {node.op.name} reads a value that no "
                             "earlier node computes (the graph is not in topological "
                             "order)") from None
        if monitor is None:
            for v, r in zip(node.outputs, _run_node(node, ins)):
                env[v] = r
            continue
        monitor(node, ins, None)
        res = _run_node(node, ins)
        for v, r in zip(node.outputs, res):
            env[v] = r
        monitor(node, ins, res)


def run_graph(graph: Graph, inputs: Sequence[np.ndarray], params: Sequence[np.ndarray],
              monitor: Monitor | None = None) -> list[np.ndarray]:
    """Run ``graph`` on NumPy arrays; returns its outputs.

    Arrays must match the graph's input and parameter types (unknown dims match anything).
    Ops that mutate an input (``op.mutated``) update the given arrays in place. Outputs
    never alias the caller's arrays. ``monitor(node, ins, outs)``, if given, is called with
    ``outs=None`` before each top-level node runs and with its results after (MXNet's
    ``register_op_hook``; a fused node is seen as one node).
    """
    env: dict = {}
    given = _bind(env, graph, graph.inputs, inputs, "input")
    given += _bind(env, graph, graph.params, params, "parameter")
    _interpret(graph, env, monitor)
    outs = []
    for v in graph.outputs:
        a = env[v]
        if any(np.may_share_memory(a, g) for g in given):
            a = a.copy()
        outs.append(a)
    return outs


def compile(graph: Graph) -> Compiled:
    """The backend interface: a function ``(inputs, params) -> outputs`` running ``graph``.

    The reference backend has nothing to generate; it closes over :func:`run_graph`.
    """
    def run(inputs: Sequence[np.ndarray], params: Sequence[np.ndarray]) -> list[np.ndarray]:
        return run_graph(graph, inputs, params)
    run.__qualname__ = f"reference[{graph.name}]"
    return run
