"""A register-blocked float32 GEMM tile as LLVM IR (a numba intrinsic), for ``cpu_gemm``.

``fv_tile(nb, nv)`` is an intrinsic ``tile(up, v, out, c, u_off, v_off, ldv, o_off, ldo)``
computing an ``F-block x nb`` block of ``out = U @ V`` with the F-block's ``16 * nv`` rows of
U packed along the sum (``up[u_off + s*16*nv + f]`` is ``U[f0 + f, s]``):

    out[o_off + f*ldo + p] = sum_{s < c} up[u_off + s*16*nv + f] * v[v_off + s*ldv + p]

for ``f < 16*nv``, ``p < nb`` (offsets in elements of the arrays' data). The block's nb*nv
vectors of 16 sums live in registers through the whole loop over s, as SSA values (phi
nodes): each step loads the nv vectors of packed U (contiguous), broadcasts each of the nb
elements ``v[s, p]`` and issues nb*nv fused multiply-adds (``llvm.fma.v16f32``); at the end
each sum is stored to its place in ``out`` (F rows of ``ldo``). numba's own loops cannot keep
such a block in registers: written as scalars or over a small array, LLVM left them
unvectorised (measured: 6-8 GFLOP/s). Each sum is its products in the order s = 0, 1, ..
c - 1, each added with one rounding: the products BLAS forms (a NaN or an infinity reaches
the same outputs), rounded differently. 14 x 32 is the block that fits AVX-512's 32 vector
registers (28 sums, two vectors of U, a broadcast).
"""
from __future__ import annotations

import functools

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F32, _I32, _I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
_V = ir.VectorType(_F32, 16)
_MASK = ir.VectorType(ir.IntType(1), 16)


def _i(v: int):
    return ir.Constant(_I64, v)


def _tile_ir(nb: int, nv: int, context, builder, sig, args):
    u_arr, v_arr, o_arr, c, u_off, v_off, ldv, o_off, ldo = args
    u_ptr, v_ptr, o_ptr = (context.make_array(sig.args[i])(context, builder, a).data
                           for i, a in enumerate((u_arr, v_arr, o_arr)))
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V, _V, _V]),
                                         "llvm.fma.v16f32")
    zero = ir.Constant(_V, [0.0] * 16)
    splat = ir.Constant(ir.VectorType(_I32, 16), [0] * 16)
    undef = ir.Constant(_V, ir.Undefined)

    entry = builder.block
    body = builder.append_basic_block("fv_s")
    done = builder.append_basic_block("fv_done")
    builder.cbranch(builder.icmp_signed(">", c, _i(0)), body, done)
    builder.position_at_end(body)
    s = builder.phi(_I64)
    s.add_incoming(_i(0), entry)
    acc = []
    for _ in range(nb * nv):
        phi = builder.phi(_V)
        phi.add_incoming(zero, entry)
        acc.append(phi)
    ub = builder.add(u_off, builder.mul(s, _i(16 * nv)))
    us = [builder.load(builder.bitcast(builder.gep(u_ptr, [builder.add(ub, _i(16 * j))]),
                                       _V.as_pointer()), align=4) for j in range(nv)]
    vb = builder.add(v_off, builder.mul(s, ldv))
    new = []
    for p in range(nb):
        x = builder.load(builder.gep(v_ptr, [builder.add(vb, _i(p))]))
        xv = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(_I32, 0)),
                                    undef, splat)
        new += [builder.call(fma, [us[j], xv, acc[p * nv + j]]) for j in range(nv)]
    nxt = builder.add(s, _i(1))
    s.add_incoming(nxt, body)
    for phi, val in zip(acc, new):
        phi.add_incoming(val, body)
    builder.cbranch(builder.icmp_signed("<", nxt, c), body, done)
    builder.position_at_end(done)
    sums = []
    for val in new:
        phi = builder.phi(_V)
        phi.add_incoming(zero, entry)
        phi.add_incoming(val, body)
        sums.append(phi)
    # each group of 16 filters: the nb vectors (one a tile, lanes = filters) transposed to 16
    # (one a filter, lanes = tiles) by four rounds of two-vector shuffles, each stored as one
    # masked run of nb tiles into its filter's row
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_V, _V.as_pointer(), _I32, _MASK]),
        "llvm.masked.store.v16f32.p0")
    mask = ir.Constant(_MASK, [1 if p < nb else 0 for p in range(16)])
    for j in range(nv):
        rows = [sums[p * nv + j] if p < nb else zero for p in range(16)]
        b = 8
        while b:
            for i in range(16):
                if i & b:
                    continue
                lo = [q if not q & b else 16 + q - b for q in range(16)]
                hi = [q + b if not q & b else 16 + q for q in range(16)]
                a, c2 = rows[i], rows[i + b]
                rows[i] = builder.shuffle_vector(a, c2, ir.Constant(ir.VectorType(_I32, 16), lo))
                rows[i + b] = builder.shuffle_vector(a, c2,
                                                     ir.Constant(ir.VectorType(_I32, 16), hi))
            b //= 2
        for lane in range(16):
            at = builder.add(o_off, builder.mul(_i(16 * j + lane), ldo))
            ptr = builder.bitcast(builder.gep(o_ptr, [at]), _V.as_pointer())
            builder.call(store, [rows[lane], ptr, ir.Constant(_I32, 4), mask])
    return context.get_dummy_value()


@functools.cache
def fv_tile(nb: int, nv: int):
    """The ``16*nv x nb`` tile intrinsic (see the module doc)."""
    def typer(typingctx, up, v, out, c, u_off, v_off, ldv, o_off, ldo):
        if not all(isinstance(t, types.Array) and t.dtype == types.float32
                   for t in (up, v, out)):
            return None
        if not all(isinstance(t, types.Integer) for t in (c, u_off, v_off, ldv, o_off, ldo)):
            return None
        return types.void(up, v, out, *([types.int64] * 6)), functools.partial(_tile_ir, nb, nv)
    typer.__name__ = f"fv_tile_{16 * nv}x{nb}"
    return intrinsic(typer)

