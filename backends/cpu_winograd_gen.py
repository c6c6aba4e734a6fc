"""numba sources of the Winograd F(m x m, 3x3) transforms (``cpu_winograd``), generated from the
algorithm's three matrices as straight-line code.

Lavin & Gray (CVPR 2016) give, for ``m`` outputs of a 3-tap filter over ``alpha = m + 2``
inputs, matrices ``B^T`` (alpha x alpha), ``G`` (alpha x 3) and ``A^T`` (m x alpha) with
``y = A^T [(G g) * (B^T d)]`` in 1-D and ``Y = A^T [(G g G^T) * (B^T d B)] A`` in 2-D. Each
matrix row becomes one expression over named scalars, zero terms dropped and +-1 kept
without a multiply (the generator is what TVM's ``winograd_util`` does with its matrices,
written out once as source). Coefficients other than +-1 are constants of the array's own
dtype (``dt(0.25)``): a Python float literal would turn float32 arithmetic into float64.

Three kernels per ``m``, one (sample, channel) plane per iteration of their ``prange``
loop (split by ``cpu_split``), flat arrays with unsigned offsets (the filter transform and
its adjoint are one GEMM each, ``cpu_winograd.filter_matrix``):
- ``in_source``: V (alpha^2, C, tiles): ``alpha`` padded input rows combined down the
  columns once per tile row (B^T d, every tile of the row at once), then along each tile;
- ``out_source``: Y (N*F, OH, OW) from M (alpha^2, F, tiles), the last tile of a row cut to
  the map's width;
- ``grad_source``: Z (alpha^2, F, tiles) from an output gradient, the adjoint of the output
  transform (the weight gradient's).
"""
from __future__ import annotations

import functools
from fractions import Fraction as Fr

# F(2x2, 3x3) and F(4x4, 3x3), Lavin & Gray 2016, s.4-5 (points 0, +-1 and 0, +-1, +-2)
MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [Fr(1, 2), Fr(1, 2), Fr(1, 2)], [Fr(1, 2), Fr(-1, 2), Fr(1, 2)],
         [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[Fr(1, 4), 0, 0], [Fr(-1, 6), Fr(-1, 6), Fr(-1, 6)], [Fr(-1, 6), Fr(1, 6), Fr(-1, 6)],
         [Fr(1, 24), Fr(1, 12), Fr(1, 6)], [Fr(1, 24), Fr(-1, 12), Fr(1, 6)], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}

_HEAD = ("import numpy as np\nfrom numba import njit, prange\nfrom numba import uint64 as u\n\n"
         "_OPTS = dict(cache=True, nogil=True, error_model='numpy')\n\n\n")


class _Consts:
    """Names for the coefficients other than +-1 (``C0 = dt(0.25)``...)."""

    def __init__(self):
        self.names: dict[Fr, str] = {}

    def __call__(self, c: Fr) -> str:
        if c not in self.names:
            self.names[c] = f"C{len(self.names)}"
        return self.names[c]

    def lines(self, indent: str) -> str:
        return "".join(f"{indent}{n} = dt({float(c)!r})\n" for c, n in self.names.items())


def _dot(row, names, consts: _Consts) -> str:
    """``sum(row[i] * names[i])`` as source, zero terms dropped."""
    out = ""
    for c, n in zip(row, names):
        c = Fr(c)
        if c == 0:
            continue
        term = n if abs(c) == 1 else f"{consts(abs(c))} * {n}"
        out += (" - " if c < 0 else " + ") + term if out else ("-" if c < 0 else "") + term
    return out or "0"


def alpha(m: int) -> int:
    return m + 2


def _separable(mat, width: str, out: str, k: _Consts) -> tuple[str, str, str]:
    """The two passes of ``out = mat X mat^T`` over a row of tiles (a transform of the
    tiles' input rows): ``col`` combines the len(mat[0]) input ``rows`` down every column
    into ``t`` (row stride ``width``), ``tile`` combines each tile's columns of ``t`` into
    the len(mat) rows ``o{j}`` of ``out``; ``offs`` sets those row offsets."""
    n_in, n_out = len(mat[0]), len(mat)
    ins = [f"d{i}" for i in range(n_in)]
    col = "".join(f"                d{i} = rows[u({i} * {width} + col)]\n" for i in range(n_in))
    col += "".join(f"                t[u({r} * {width} + col)] = {_dot(mat[r], ins, k)}\n"
                   for r in range(n_out))
    ts = [f"a{i}" for i in range(n_in)]
    tile = "".join(f"                    a{i} = t[e + u({i})]\n" for i in range(n_in))
    tile += "".join(f"                    {out}[o{r} + u(tx)] = {_dot(mat[r], ts, k)}\n"
                    for r in range(n_out))
    offs = "".join(f"                o{r} = o + u({r}) * kst\n" for r in range(n_out))
    return col, tile, offs


@functools.cache
def in_source(m: int) -> str:
    """``kernel(x, ph, pw, th, tw, v)``: x (N*C, H, W) planes -> V (alpha^2, C, tiles)."""
    bt, _, _ = MATRICES[m]
    a, k = alpha(m), _Consts()
    col, tile, offs = _separable(bt, "wp", "vf", k)
    return _HEAD + f"""@njit(parallel=True, fastmath={{'contract'}}, **_OPTS)
def kernel(x, ph, pw, th, tw, v):
    P, h, w = x.shape
    c = v.shape[1]
    T = th * tw
    wp = {m} * tw + {a - m}
    c0 = min(pw, wp)
    c1 = max(min(pw + w, wp), c0)
    xf, vf = x.ravel(), v.ravel()
    kst = u(c * v.shape[2])          # distance between two of the alpha^2 rows of v
    dt = x.dtype.type
{k.lines("    ")}    for q in prange(P):
        b = q // c
        ci = q - b * c
        rows = np.zeros({a} * wp, x.dtype)
        t = np.empty({a} * wp, x.dtype)
        for ty in range(th):
            for i in range({a}):
                r = {m} * ty - ph + i
                ro = u(i * wp)
                if r < 0 or r >= h:
                    for cc in range(wp):
                        rows[ro + u(cc)] = 0
                    continue
                src = u((q * h + r) * w) - u(pw)
                for cc in range(c0, c1):
                    rows[ro + u(cc)] = xf[src + u(cc)]
            for col in range(wp):   # B^T d: down the columns, every tile of the row at once
{col}            base = u(ci * v.shape[2] + b * T + ty * tw)
            for i in range({a}):    # (B^T d) B: along each tile's columns
                o = u({a} * i) * kst + base
{offs}                ti = u(i * wp)
                for tx in range(tw):
                    e = ti + u({m} * tx)
{tile}"""


@functools.cache
def out_source(m: int) -> str:
    """``kernel(mm, th, tw, y)``: M (alpha^2, F, tiles) -> y (N*F, OH, OW) planes."""
    _, _, at = MATRICES[m]
    a, k = alpha(m), _Consts()
    ms = [f"m{i}" for i in range(a)]
    down = "".join(f"                s{i} = s0 + u({a * i}) * kst\n" for i in range(1, a))
    loads = "".join(f"                    m{i} = mf[s{i} + u(tx)]\n" for i in range(a))
    loads += "".join(f"                    r[u(({q} * {a} + j) * tw + tx)] = "
                     f"{_dot(at[q], ms, k)}\n" for q in range(m))
    rs = [f"a{j}" for j in range(a)]
    rl = "".join(f"                    a{j} = r[ri + u({j} * tw + tx)]\n" for j in range(a))
    full = "".join(f"                    yf[dst + u({m} * tx + {q})] = {_dot(at[q], rs, k)}\n"
                   for q in range(m))
    vals = ", ".join(_dot(at[q], rs, k) for q in range(m))
    return _HEAD + f"""@njit(parallel=True, fastmath={{'contract'}}, **_OPTS)
def kernel(mm, th, tw, y):
    P, oh, ow = y.shape
    f = mm.shape[1]
    T = th * tw
    mf, yf = mm.ravel(), y.ravel()
    kst = u(f * mm.shape[2])
    dt = y.dtype.type
{k.lines("    ")}    full = ow // {m}
    for q in prange(P):
        b = q // f
        fi = q - b * f
        r = np.empty({m * a} * tw, y.dtype)
        for ty in range(th):
            base = u(fi * mm.shape[2] + b * T + ty * tw)
            for j in range({a}):    # A^T M: down the tile's columns
                s0 = u(j) * kst + base
{down}                for tx in range(tw):
{loads}            for i in range({m}):    # (A^T M) A: along the rows
                yr = {m} * ty + i
                if yr >= oh:
                    break
                ri = u(i * {a} * tw)
                dst = u((q * oh + yr) * ow)
                for tx in range(full):
{rl}{full}                if full < tw:
                    tx = full
{rl}                    vals = ({vals},)
                    for cut in range(ow - {m} * tx):
                        yf[dst + u({m} * tx + cut)] = vals[cut]
"""


@functools.cache
def grad_source(m: int) -> str:
    """``kernel(gy, th, tw, z)``: output-gradient planes gy (N*F, OH, OW) -> Z (alpha^2, F,
    tiles), ``Z = A dY A^T`` per m x m tile (the adjoint of the output transform; tiles past
    the map read zeros)."""
    _, _, at = MATRICES[m]
    a, k = alpha(m), _Consts()
    a_rows = [[at[p][i] for p in range(m)] for i in range(a)]   # A = (A^T)^T
    col, tile, offs = _separable(a_rows, "wd", "zf", k)
    return _HEAD + f"""@njit(parallel=True, fastmath={{'contract'}}, **_OPTS)
def kernel(gy, th, tw, z):
    P, oh, ow = gy.shape
    f = z.shape[1]
    T = th * tw
    wd = {m} * tw
    gf, zf = gy.ravel(), z.ravel()
    kst = u(f * z.shape[2])
    dt = gy.dtype.type
{k.lines("    ")}    for q in prange(P):
        b = q // f
        fi = q - b * f
        rows = np.zeros({m} * wd, gy.dtype)
        t = np.empty({a} * wd, gy.dtype)
        for ty in range(th):
            for p in range({m}):
                r = {m} * ty + p
                ro = u(p * wd)
                if r >= oh:
                    for cc in range(wd):
                        rows[ro + u(cc)] = 0
                    continue
                src = u((q * oh + r) * ow)
                for cc in range(ow):
                    rows[ro + u(cc)] = gf[src + u(cc)]
            for col in range(wd):   # A dY: down the columns
{col}            base = u(fi * z.shape[2] + b * T + ty * tw)
            for i in range({a}):    # (A dY) A^T: along each tile
                o = u({a} * i) * kst + base
{offs}                ti = u(i * wd)
                for tx in range(tw):
                    e = ti + u({m} * tx)
{tile}"""
