"""Shared source generation: scalar templates -> loop bodies, and loading generated modules.

Elementwise ops carry a scalar ``template`` (a Python expression over ``a``, ``b`` and the
op's attribute names, ``ir/ops.py``). A chain of such ops becomes straight-line scalar code,
one temporary per IR value, inside a loop nest that the CPU backend compiles with numba
(the CUDA backend puts the same body in a launch skeleton). Attributes are substituted as
constants and branches on them folded away at generation time (TVM's constant folding of
attributes into the kernel); numeric literals become constants of the compute dtype, so a
float32 chain stays in float32 instead of being promoted by Python's float64 literals.

Generated modules are loaded through a *module loader*. The runtime installs its on-disk
kernel cache here (``ember.runtime.cache``); the layer rule forbids backends to import the
runtime, so the dependency is inverted: without an installed loader, modules are executed
in memory and numba's on-disk cache is off.
"""
from __future__ import annotations

import ast
import hashlib
import math
import types
from collections.abc import Callable, Sequence

from ember.ir.graph import Node, Value
from ember.ir.ops import OpDef, OpKind

FLOAT_DTYPES = ("float32", "float64")
# ops whose NumPy kernels compute in float64 whatever the input (math.* through frompyfunc,
# float64 series): their templates run in float64 too, or float32 results drift off them
_F64_OPS = {"erf", "erfinv", "gamma", "gammaln", "digamma", "cbrt", "rcbrt", "power",
            "power_scalar", "rpower_scalar", "hypot"}
# power_scalar exponents computed by multiplication and sqrt (LLVM turns pow(x, 2) into x * x
# itself, and pow(x, 2.5) into x * x * sqrt(x) only with fastmath 'afn', NaN at -inf)
_SMALL_POWERS = (0.5, 1.5, 2.5, 3.0, 3.5, 4.0, -0.5, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0)
# broadcasting ops that only copy their first input: their template is the identity
_IDENTITY = {"broadcast_to", "broadcast_like", "broadcast_axis"}

ModuleLoader = Callable[[str, str], types.ModuleType]


# ---- templates --------------------------------------------------------------------------
def template_of(op: OpDef) -> str | None:
    """The scalar template of ``op`` for code generation, or None when it has none."""
    if op.name in _IDENTITY:
        return "a"
    if op.kind in (OpKind.ELEMWISE, OpKind.BROADCAST) and op.template is not None:
        return op.template
    return None


def n_scalar_args(node: Node) -> int:
    """How many of ``node``'s inputs its template reads (broadcast_like ignores its 2nd)."""
    return 1 if node.op.name in _IDENTITY else len(node.inputs)


def is_scalar_node(node: Node) -> bool:
    """Whether ``node`` can be generated as scalar code: a template, float types, 1-2 args."""
    if getattr(node, "body", None) is not None or template_of(node.op) is None:
        return False
    if node.op.mutated(node.attr_dict) or len(node.outputs) != 1:
        return False
    n_args = n_scalar_args(node)
    if n_args not in (1, 2):
        return False
    vals = [*node.inputs[:n_args], *node.outputs]
    return all(v.type.known and v.type.dtype in FLOAT_DTYPES for v in vals)


class _Subst(ast.NodeTransformer):
    """Rename ``a``/``b``, put attributes in as constants, retype numeric literals, and
    replace ``math.<f>`` by the backend's own functions (``funcs``: f -> name)."""

    def __init__(self, names: dict[str, str], attrs: dict, const: Callable[[float], str],
                 funcs: dict[str, str] | None = None):
        self.names, self.attrs, self.const = names, attrs, const
        self.funcs = funcs or {}

    def visit_Attribute(self, node: ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "math" \
                and node.attr in self.funcs:
            return ast.copy_location(ast.Name(self.funcs[node.attr], ast.Load()), node)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name):
        if node.id in self.names:
            return ast.copy_location(ast.Name(self.names[node.id], ast.Load()), node)
        if node.id in self.attrs:
            v = self.attrs[node.id]
            if isinstance(v, bool) or not isinstance(v, int | float):
                return ast.copy_location(ast.Constant(v), node)
            return ast.copy_location(ast.Name(self.const(float(v)), ast.Load()), node)
        return node

    def visit_Constant(self, node: ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            return node
        return ast.copy_location(ast.Name(self.const(float(v)), ast.Load()), node)


class _Fold(ast.NodeTransformer):
    """Fold comparisons of constants (``'relu' == 'relu'``) and conditionals on them."""

    def visit_Compare(self, node: ast.Compare):
        self.generic_visit(node)
        parts = [node.left, *node.comparators]
        if len(node.ops) == 1 and all(isinstance(p, ast.Constant) for p in parts):
            a, b = parts[0].value, parts[1].value
            ops = {ast.Eq: lambda: a == b, ast.NotEq: lambda: a != b}
            fn = ops.get(type(node.ops[0]))
            if fn is not None:
                return ast.copy_location(ast.Constant(fn()), node)
        return node

    def visit_IfExp(self, node: ast.IfExp):
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant):
            return node.body if node.test.value else node.orelse
        return node


class ConstPool:
    """Numeric constants of a generated module, typed in the compute dtype (``C0 = ...``)."""

    def __init__(self):
        self.items: dict[tuple[str, float], str] = {}

    def get(self, value: float, dtype: str) -> str:
        key = (dtype, float(value))
        name = self.items.get(key)
        if name is None:
            name = self.items[key] = f"C{len(self.items)}"
        return name

    def source(self) -> str:
        # repr(inf) and repr(nan) are not Python literals: those go through float('inf')
        return "".join(f"{n} = np.{dt}({v!r})\n" if math.isfinite(v) else
                       f"{n} = np.{dt}(float({str(v)!r}))\n"
                       for (dt, v), n in self.items.items())


def compute_dtype(node: Node) -> str:
    """The precision a node's template runs in: its first input's, float64 for some ops."""
    if node.op.name in _F64_OPS:
        return "float64"
    return node.inputs[0].type.dtype if node.inputs else node.outputs[0].type.dtype


def _small_power(a: str, n: float) -> str:
    """``a ** n`` for n in :data:`_SMALL_POWERS` by products, a sqrt and a reciprocal, with
    C's pow at the points where those differ: pow(-inf, 2.5) is inf and pow(-inf, -2.5) 0
    where sqrt(-inf) is NaN, pow(-0.0, -2.5) is +inf; x < 0 gives NaN either way."""
    k = int(abs(n))
    half = abs(n) != k
    prod = "(" + " * ".join([a] * k + ([f"math.sqrt({a})"] if half else [])) + ")"
    if n > 0:
        return f"(math.inf if {a} == -math.inf else {prod})" if half else prod
    if half:
        return f"(0.0 if {a} == -math.inf else (math.inf if {a} == 0.0 else 1.0 / {prod}))"
    return f"(1.0 / {prod})"   # signed zeros and infinities come out as pow's


def scalar_expr(node: Node, args: Sequence[str], pool: ConstPool,
                funcs: dict[str, dict[str, str]] | None = None) -> str:
    """``node``'s template as an expression over the variables ``args`` (for a, b).

    ``funcs``: per compute dtype, ``math`` functions to call by another name (the CPU
    backend's vectorisable float32 ``exp``/``tanh``), and ``"op:<name>"`` entries naming a
    function that computes the whole op (``sigmoid``).
    """
    dt = compute_dtype(node)
    n = node.attr_dict.get("scalar") if node.op.name == "power_scalar" else None
    if n in _SMALL_POWERS:  # x ** 2.5 as x * x * sqrt(x): a libm pow call does not vectorise
        return _small_power(args[0], n)
    whole = (funcs or {}).get(dt, {}).get("op:" + node.op.name)
    if whole is not None:  # the backend has the whole op as one function
        return f"{whole}({', '.join(args)})"
    names = dict(zip(("a", "b"), args))
    attrs = {k: v for k, v in node.attr_dict.items() if k not in ("a", "b")}
    tree = ast.parse(template_of(node.op), mode="eval")
    tree = _Subst(names, attrs, lambda v: pool.get(v, dt), (funcs or {}).get(dt)).visit(tree)
    tree = ast.fix_missing_locations(_Fold().visit(tree))
    return ast.unparse(tree.body)


def scalar_body(nodes: Sequence[Node], leaves: dict[Value, str], pool: ConstPool,
                indent: str, funcs: dict[str, dict[str, str]] | None = None
                ) -> tuple[list[str], dict[Value, str]]:
    """Straight-line statements computing ``nodes`` from scalars named in ``leaves``.

    Returns the lines and the variable of every value (leaves included). An input whose
    precision differs from the node's compute dtype is converted first (``np.float64(x)``),
    and a result computed in another precision than its value's dtype is converted to it.
    """
    var = dict(leaves)
    lines = []
    for k, node in enumerate(nodes):
        dt = compute_dtype(node)
        args = []
        for v in node.inputs[:n_scalar_args(node)]:
            name = var[v]
            if v.type.dtype != dt:
                name = f"np.{dt}({name})"
            args.append(name)
        out = f"t{k}"
        expr = scalar_expr(node, args, pool, funcs)
        want = node.outputs[0].type.dtype
        if want != dt:  # a float64 op in a float32 chain: rounded as eager rounds its result
            expr = f"np.{want}({expr})"
        lines.append(f"{indent}{out} = {expr}")
        var[node.outputs[0]] = out
    return lines, var


# ---- loading generated modules ----------------------------------------------------------
def source_key(source: str, *extra: str) -> str:
    """Hex digest naming a generated module (its source and whatever else it depends on)."""
    h = hashlib.sha256(source.encode())
    for e in extra:
        h.update(b"\0" + e.encode())
    return h.hexdigest()[:32]


_MEMORY: dict[str, types.ModuleType] = {}


def _load_in_memory(source: str, name: str) -> types.ModuleType:
    """Execute ``source`` as a module without a file (numba cannot cache it on disk)."""
    key = source_key(source)
    mod = _MEMORY.get(key)
    if mod is None:
        mod = types.ModuleType(name)
        exec(compile(source.replace("cache=True", "cache=False"), f"<ember {name}>", "exec"),
             mod.__dict__)
        _MEMORY[key] = mod
    return mod


_loader: ModuleLoader | None = None


def set_module_loader(loader: ModuleLoader | None) -> None:
    """Install how generated modules are loaded (``loader(source, name) -> module``)."""
    global _loader
    _loader = loader


def load_module(source: str, name: str) -> types.ModuleType:
    """Load generated ``source`` with the installed loader (in memory when there is none)."""
    return (_loader or _load_in_memory)(source, name)


def compiled_before(source: str, name: str) -> bool:
    """Whether the installed loader's cache holds machine code an earlier process saved for
    ``source`` (its ``compiled_before``; False without one)."""
    check = getattr(getattr(_loader, "__self__", None), "compiled_before", None)
    return bool(check is not None and check(source, name))
