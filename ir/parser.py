"""Parser of the IR text format that :mod:`ember.ir.printer` writes (see its docstring).

A line-oriented recursive-descent reader: each statement is one line; brackets and quoted
strings are skipped as units when looking for separators, so attribute strings and quoted
names may hold any character. Errors name the line and show it.
"""
from __future__ import annotations

import ast
import re

from .errors import EmberError
from .graph import FUSED, Graph, Node, Value
from .ops import get_op, normalize_attrs
from .printer import literal_value, parse_literal
from .types import TensorType, long_dtype

_TYPE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[([^\]]*)\](?:\s*@([A-Za-z_]\w*)\+(\d+))?\Z")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _skip_string(s: str, i: int) -> int:
    """Index just past the string literal starting at ``s[i]``."""
    q, i = s[i], i + 1
    while i < len(s) and s[i] != q:
        i += 2 if s[i] == "\\" else 1
    return i + 1


_STOPS: dict[str, re.Pattern] = {}  # chars -> the characters _find_top must look at
_COMMENT = re.compile(r"[#'\"]")


def _find_top(s: str, chars: str, start: int = 0) -> int:
    """First index >= start of one of ``chars`` outside brackets and quotes (-1: none).

    Jumps from one bracket, quote or wanted character to the next with a regular expression
    (a character loop in Python made parsing a ResNet-50 program slower than compiling it).
    """
    stops = _STOPS.get(chars)
    if stops is None:
        stops = _STOPS[chars] = re.compile("[" + re.escape("'\"([{)]}" + chars) + "]")
    depth, i = 0, start
    while True:
        m = stops.search(s, i)
        if m is None:
            return -1
        i = m.start()
        c = s[i]
        if c in "'\"":
            i = _skip_string(s, i)
            continue
        if depth == 0 and c in chars:
            return i
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1


def _find_comment(s: str) -> int:
    """Index of the ``#`` that starts a trailing comment (outside quotes), or -1."""
    i = 0
    while True:
        m = _COMMENT.search(s, i)
        if m is None:
            return -1
        i = m.start()
        if s[i] == "#":
            return i
        i = _skip_string(s, i)


def _split_top(s: str, sep: str = ",") -> list[str]:
    parts, i = [], 0
    while True:
        j = _find_top(s, sep, i)
        if j < 0:
            parts.append(s[i:].strip())
            return [p for p in parts if p]
        parts.append(s[i:j].strip())
        i = j + 1


def _group(s: str, line: _Line) -> tuple[str, str]:
    """``s`` starts with a bracket: (its contents, the text after its closing bracket)."""
    end = _find_top(s, _CLOSE[s[0]], 1)
    if end < 0:
        line.fail(f"no closing {_CLOSE[s[0]]!r}")
    return s[1:end], s[end + 1:].strip()


class _Line:
    def __init__(self, lines: list[str], i: int):
        self.no, self.text = i + 1, lines[i]

    def fail(self, msg: str):
        raise EmberError(f"IR text line {self.no}: {msg}\n    {self.text.strip()}")


def _take_name(s: str, line: _Line) -> tuple[str, str]:
    """A bare identifier or a quoted string at the start of ``s``; (name, rest)."""
    if s[:1] in ("'", '"'):
        end = _skip_string(s, 0)
        return parse_literal(s[:end]), s[end:]
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s)
    if not m:
        line.fail(f"expected a name at {s[:20]!r}")
    return m.group(), s[m.end():]


def _var(tok: str, line: _Line) -> tuple[tuple, str | None]:
    """``%0`` / ``%x`` / ``%x.1`` / ``%'odd'``: (scope key, name hint)."""
    tok = tok.strip()
    if not tok.startswith("%"):
        line.fail(f"expected a value name, got {tok!r}")
    if tok[1:].isdigit():
        return ("#", int(tok[1:])), None
    hint, rest = _take_name(tok[1:], line)
    if rest and not re.fullmatch(r"\.\d+", rest):
        line.fail(f"bad value name {tok!r}")
    return (hint, int(rest[1:]) if rest else 0), hint


def _type(text: str, line: _Line) -> tuple[TensorType, tuple[str, int] | None]:
    m = _TYPE.match(text.strip())
    if not m:
        line.fail(f"bad type {text.strip()!r}")
    dt, dims, arena, off = m.groups()
    if dims.strip() == "*":
        shape = None
    else:
        try:
            shape = tuple(None if d.strip() == "?" else int(d) for d in dims.split(",")
                          if d.strip())
        except ValueError:
            line.fail(f"bad dims in type {text.strip()!r}")
    mem = (arena, int(off)) if arena is not None else None
    try:
        t = TensorType(shape, long_dtype(dt))
    except TypeError:
        t = None
    if t is None or t.dtype != long_dtype(dt):  # NumPy's char codes ('q', 'f') are not names
        line.fail(f"unknown dtype {dt!r}")
    return t, mem


class Parser:
    """Reads one graph from text: ``Parser(text).graph()``."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.i = 0

    def _next(self) -> tuple[_Line, str] | None:
        """The next statement (blank lines and plain comments skipped), comment split off."""
        while self.i < len(self.lines):
            line = _Line(self.lines, self.i)
            s = line.text.strip()
            self.i += 1
            if s and not (s.startswith("#") and not s.startswith("# meta:")):
                return line, s
        return None

    def _peek_meta(self) -> str | None:
        while self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1
        if self.i < len(self.lines) and self.lines[self.i].strip().startswith("# meta:"):
            return self.lines[self.i].strip()
        return None

    def _meta(self, g: Graph) -> None:
        while (s := self._peek_meta()) is not None:
            line = _Line(self.lines, self.i)
            self.i += 1
            body = s[len("# meta:"):].strip()
            key, rest = (_take_name(body, line) if body[:1] in "'\"" else
                         (body.split("=", 1)[0], body[len(body.split("=", 1)[0]):]))
            if not rest.startswith("="):
                line.fail("expected '# meta: key=value'")
            try:
                g.meta[key] = parse_literal(rest[1:])
            except (ValueError, SyntaxError):
                line.fail(f"meta value {rest[1:]!r} is not a literal")

    def _decls(self, text: str, scope: dict, line: _Line) -> list[Value]:
        out = []
        for part in _split_top(text):
            c = _find_top(part, ":")
            if c < 0:
                line.fail(f"{part!r} needs a type ('%x: f32[2,3]')")
            key, hint = _var(part[:c], line)
            t, mem = _type(part[c + 1:], line)
            v = Value(t, name_hint=hint, mem=mem)
            self._define(scope, key, v, line)
            out.append(v)
        return out

    @staticmethod
    def _define(scope: dict, key: tuple, v: Value, line: _Line) -> None:
        if key in scope:
            line.fail("value is defined twice")
        scope[key] = v

    def _signature(self, s: str, scope: dict, line: _Line):
        if not s.startswith("("):
            line.fail("expected '(' and the inputs")
        ins, s = _group(s, line)
        inputs = self._decls(ins, scope, line)
        params = []
        if s.startswith("params("):
            ps, s = _group(s[len("params"):], line)
            params = self._decls(ps, scope, line)
        return inputs, params, s

    def graph(self) -> Graph:
        first = self._next()
        if first is None or not first[1].startswith("graph "):
            raise EmberError("IR text must start with 'graph NAME(...) {'")
        line, s = first
        name, s = _take_name(s[len("graph "):].strip(), line)
        scope: dict = {}
        inputs, params, s = self._signature(s.strip(), scope, line)
        if s != "{":
            line.fail("expected '{' after the signature")
        g = Graph(name, inputs, params, [], [])
        self._block(g, scope)
        self._meta(g)
        if self._next() is not None:
            raise EmberError("IR text goes on after the graph's closing '}'")
        return g

    def _block(self, g: Graph, scope: dict) -> None:
        """Statements up to ``return``, then the closing brace."""
        while True:
            nxt = self._next()
            if nxt is None:
                raise EmberError(f"IR text ends inside graph {g.name!r}")
            line, s = nxt
            if s == "return" or s.startswith("return "):
                g.outputs = [self._use(scope, t, line) for t in _split_top(s[6:])]
                close = self._next()
                if close is None or close[1] != "}":
                    (close[0] if close else line).fail("expected '}' after return")
                return
            g.nodes.append(self._node(line, s, scope))

    def _use(self, scope: dict, tok: str, line: _Line) -> Value:
        key, _ = _var(tok, line)
        if key not in scope:
            line.fail(f"{tok.strip()} is used before it is defined")
        return scope[key]

    def _node(self, line: _Line, s: str, scope: dict) -> Node:
        loc = None
        c = _find_comment(s)
        if c >= 0:
            loc, s = s[c + 1:].strip(), s[:c].strip()
            loc = parse_literal(loc) if loc[:1] in "'\"" else loc
        eq = _find_top(s, "=")
        if eq < 0:
            line.fail("expected 'outputs = op(inputs)'")
        lhs = []
        for part in _split_top(s[:eq]):
            c = _find_top(part, ":")
            key, hint = _var(part if c < 0 else part[:c], line)
            lhs.append((key, hint, None if c < 0 else _type(part[c + 1:], line)))
        opname, rest = _take_name(s[eq + 1:].strip(), line)
        if not rest.startswith("("):
            line.fail("expected '(' after the op name")
        args, rest = _group(rest, line)
        inputs = [self._use(scope, t, line) for t in _split_top(args)]
        attrs: dict = {}
        if rest.startswith("{") and rest != "{":
            text, rest = _group(rest, line)
            try:
                call = ast.parse(f"f({text})", mode="eval").body
                attrs = {kw.arg: literal_value(kw.value) for kw in call.keywords}
            except (ValueError, SyntaxError) as e:
                line.fail(f"bad attributes {{{text}}}: {e}")
        node = Node(FUSED, inputs, (), loc=loc)
        if rest.startswith("fused("):
            node.name = opname
            node.attrs = tuple(sorted(attrs.items()))
            body_scope: dict = {}
            b_in, b_par, rest = self._signature(rest[len("fused"):], body_scope, line)
            if rest != "{":
                line.fail("expected '{' and the body of the fused node")
            node.body = Graph(opname, b_in, b_par, [], [])
            self._block(node.body, body_scope)
            self._meta(node.body)
            types = [v.type for v in node.body.outputs]
        else:
            if rest.startswith("as "):
                node.name, rest = _take_name(rest[3:].strip(), line)
            if rest.strip():
                line.fail(f"unexpected {rest.strip()!r}")
            typed = all(t is not None for _, _, t in lhs)
            node.op, node.attrs, types = self._op(opname, inputs, attrs, line, typed)
            if typed:
                types = [t for _, _, (t, _) in lhs]
        if len(lhs) != len(types):
            line.fail(f"{len(lhs)} names for {len(types)} outputs")
        for i, ((key, hint, typed), t) in enumerate(zip(lhs, types)):
            t, mem = typed if typed is not None else (t, None)
            v = Value(t, node, i, hint, mem)
            self._define(scope, key, v, line)
            node.outputs.append(v)
        return node

    @staticmethod
    def _op(opname: str, inputs: list[Value], attrs: dict, line: _Line, typed: bool):
        try:
            op = get_op(opname)
            is_train = attrs.pop("is_train", None) if op.mode else None
            unknown = sorted(set(attrs) - set(op.attrs))
            if unknown and not op.open_attrs:  # stricter than Python calls: the text is exact
                line.fail(f"{op.name} takes no attribute {', '.join(unknown)}")
            attrs = normalize_attrs(op, attrs)
            if op.mode:
                attrs["is_train"] = bool(is_train)
            in_types = [v.type for v in inputs]
            if typed:  # the text gives the types: the rule need not run (verify checks it)
                types = [None] * op.n_outputs(attrs)
            elif any(t.shape is None for t in in_types):
                dt = in_types[0].dtype if in_types else "float32"
                types = [TensorType(None, dt)] * op.n_outputs(attrs)
            else:
                types = op.infer(in_types, attrs)[0]
        except EmberError as e:
            line.fail(str(e))
        return op, tuple(sorted(attrs.items())), list(types)


