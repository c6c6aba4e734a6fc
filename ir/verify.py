"""The IR verifier: SSA, order and types of a graph, checked after every pass in tests.

What it checks (MLIR's verifier and LLVM's ``-verify`` are the models: cheap, run between
passes, an error names the offending statement as printed):

- every value a node reads is defined before it (a graph input, a parameter or the output
  of an earlier node) and no value is defined twice;
- each node's outputs point back at it (``producer``, ``index``) and their number is what
  the op gives for its attributes; its attributes are the op's own;
- each node's recorded output types agree with its op's shape rule applied to its recorded
  input types, and the rule accepts those inputs (an unknown dim agrees with any dim: graphs
  straight from the tracer may know less than the rule does);
- the graph's outputs are values of the graph;
- a fused node's body is itself valid, takes the node's inputs (its inputs, then params) and
  gives the node's output types.
"""
from __future__ import annotations

from .errors import EmberError
from .graph import Graph, Node, Value
from .printer import Namer, format_node
from .types import TensorType


def compatible(a: TensorType, b: TensorType) -> bool:
    """Whether two types can describe the same tensor (unknown dims match anything)."""
    if a.dtype != b.dtype:
        return False
    if a.shape is None or b.shape is None:
        return True
    return len(a.shape) == len(b.shape) and all(
        x is None or y is None or x == y for x, y in zip(a.shape, b.shape))


class _Checker:
    def __init__(self, graph: Graph, where: str):
        self.graph = graph
        self.where = where
        self.namer = Namer()
        self.defined: set[int] = set()
        self.later = {id(o) for n in graph.nodes for o in n.outputs}

    def fail(self, msg: str, node: Node | None = None):
        text = f"verify {self.where}{self.graph.name}: {msg}"
        if node is not None:
            text += "\n    " + format_node(node, self.namer, define=False)
        raise EmberError(text)

    def define(self, v, what: str, node: Node | None = None):
        if not isinstance(v, Value):
            self.fail(f"{what} {v!r} is not a Value", node)
        if id(v) in self.defined:
            self.fail(f"{self.namer(v)} is defined twice ({what})", node)
        self.defined.add(id(v))
        self.namer.define(v)

    def use(self, v, what: str, node: Node | None = None):
        if isinstance(v, Value) and id(v) in self.defined:
            return
        if not isinstance(v, Value):
            self.fail(f"{what} {v!r} is not a Value", node)
        if id(v) in self.later:
            self.fail(f"{what} {self.namer(v)} is used before it is defined", node)
        self.fail(f"{what} {self.namer(v)} ({v.type}) is not part of the graph: no input, "
                  "parameter or earlier node defines it", node)

    def run(self):
        g = self.graph
        for v in g.inputs:
            self.define(v, "input")
        for v in g.params:
            self.define(v, "parameter")
        for node in g.nodes:
            for i, v in enumerate(node.inputs):
                self.use(v, f"input {i}", node)
            for i, o in enumerate(node.outputs):
                if not isinstance(o, Value) or o.producer is not node or o.index != i:
                    self.fail(f"output {i} does not point back at its node "
                              "(producer/index)", node)
            if node.body is not None:
                self.check_fused(node)
            else:
                self.check_op(node)
            for o in node.outputs:
                self.define(o, "node output", node)
        for i, v in enumerate(g.outputs):
            self.use(v, f"graph output {i}")

    def check_op(self, node: Node):
        op, attrs = node.op, node.attr_dict
        known = set(op.attrs) | ({"is_train"} if op.mode else set())
        extra = sorted(set(attrs) - known)
        if extra and not op.open_attrs:
            self.fail(f"{op.name} takes no attribute {', '.join(extra)}", node)
        missing = sorted(set(op.attrs) - set(attrs))
        if missing:
            self.fail(f"{op.name} lacks attribute {', '.join(missing)}", node)
        try:
            n_out = op.n_outputs(attrs)
        except Exception as e:  # a malformed attribute the count depends on
            self.fail(f"{op.name}: cannot count its outputs ({e})", node)
        if len(node.outputs) != n_out:
            self.fail(f"{op.name} gives {n_out} outputs, the node has {len(node.outputs)}",
                      node)
        in_types = [v.type for v in node.inputs]
        if any(t.shape is None for t in in_types):
            return  # the rule needs ranks; infer_shapes resolves them
        try:
            outs, refined = op.infer(in_types, attrs)
        except Exception as e:  # the rule's own complaint, tied to the statement
            self.fail(f"the shape rule of {op.name} rejects its inputs: {e}", node)
        for i, (v, t) in enumerate(zip(node.inputs, refined)):
            if not compatible(v.type, t):
                self.fail(f"input {i} has type {v.type}, the shape rule of {op.name} "
                          f"needs {t}", node)
        for i, (o, t) in enumerate(zip(node.outputs, outs)):
            if not compatible(o.type, t):
                self.fail(f"output {i} is recorded as {o.type}, the shape rule of "
                          f"{op.name} gives {t}", node)

    def check_fused(self, node: Node):
        body = node.body
        try:
            verify(body, where=f"{self.where}{self.graph.name}/")
        except EmberError as e:
            self.fail(f"the body of fused node {node.name} is invalid: {e}", node)
        params = body.inputs + body.params
        if len(params) != len(node.inputs):
            self.fail(f"the body takes {len(params)} values, the node gives it "
                      f"{len(node.inputs)}", node)
        for i, (v, p) in enumerate(zip(node.inputs, params)):
            if not compatible(v.type, p.type):
                self.fail(f"input {i} has type {v.type}, the body expects {p.type}", node)
        if len(body.outputs) != len(node.outputs):
            self.fail(f"the body returns {len(body.outputs)} values, the node has "
                      f"{len(node.outputs)} outputs", node)
        for i, (o, r) in enumerate(zip(node.outputs, body.outputs)):
            if not compatible(o.type, r.type):
                self.fail(f"output {i} is recorded as {o.type}, the body returns "
                          f"{r.type}", node)


def verify(graph: Graph, *, where: str = "") -> None:
    """Raise :class:`EmberError` naming the first statement that breaks a rule above."""
    _Checker(graph, where).run()
