"""lossc_lbfgs_two_loop: L-BFGS's direction -H g by the two-loop recursion (Nocedal and
Wright, algorithm 7.4), over the curvature pairs lossc.optim.quasi_newton.History
keeps, in its frame abi.LBFGS_TWO_LOOP.

The same operations as History's NumPy product, element by element: q = g; for each
pair, newest first, a = rho s'q and q = q - y a; q = q gamma, gamma = 1 / (rho y'y) of
the newest pair; for each pair, oldest first, b = rho y'q and q = q + s (a - b); then
q = -q. Only the dot products round differently: here LANES partial sums, one for
each residue of the element's index up to the last whole group of LANES, added in
lane order, then the remaining elements in order (a fixed order, so the same on every
run), where NumPy's BLAS adds in blocks of its own. Each step of the recursion is one
pass over n doubles: on a small model the product is a microsecond or two of native
work, where NumPy pays a call for each dot product and each vector update
(docs/training.md has the figures).

No fast-math flags: LLVM keeps the order of every sum and fuses no multiply into an
add; the partial sums are vectors by construction.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import abi, unit_names
from lossc.codegen.abi import LBFGS_TWO_LOOP as FRAME
from lossc.codegen.values import I32, I64, counted_loop

FUNCTION = unit_names.EXPORTS[unit_names.TWO_LOOP]
F64 = ir.DoubleType()
LANES = 8               # the dot products' partial sums (one AVX-512 register of doubles)
VECTOR = ir.VectorType(F64, LANES)


def _vector_at(b: ir.IRBuilder, p, i):
    """LANES doubles from p[i] on (aligned to a double only)."""
    return b.load(b.bitcast(b.gep(p, [i]), VECTOR.as_pointer()), align=8)


def emit_two_loop(module: ir.Module) -> None:
    """Define FUNCTION in `module`."""
    fn = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer()]), name=FUNCTION)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    frame = fn.args[0]
    n, pairs, order, s, y, rho, alpha, q = (
        FRAME.load(b, frame, k) for k in ("n", "pairs", "order", "s", "y", "rho", "alpha",
                                          "q"))
    total = b.alloca(F64, name="total")
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)

    def row(k):
        """(row index, its s, its y) of pair k (0 the oldest)."""
        r = b.load(b.gep(order, [k]))
        start = b.mul(r, n)
        return r, b.gep(s, [start]), b.gep(y, [start])

    lanes = b.alloca(VECTOR, name="lanes")
    whole = b.mul(b.sdiv(n, ir.Constant(I64, LANES)), ir.Constant(I64, LANES))

    def dot(u, v):
        """u'v: LANES partial sums over the elements' LANES residues, up to the last
        whole group of LANES, added lane by lane, then the rest one by one."""
        b.store(ir.Constant(VECTOR, None), lanes)
        with counted_loop(b, fn, zero, whole, step=LANES) as i:
            term = b.fmul(_vector_at(b, u, i), _vector_at(b, v, i))
            b.store(b.fadd(b.load(lanes), term), lanes)
        partial = b.load(lanes)
        b.store(ir.Constant(F64, 0.0), total)
        for lane in range(LANES):
            lane_sum = b.extract_element(partial, ir.Constant(I32, lane))
            b.store(b.fadd(b.load(total), lane_sum), total)
        with counted_loop(b, fn, whole, n) as i:
            term = b.fmul(b.load(b.gep(u, [i])), b.load(b.gep(v, [i])))
            b.store(b.fadd(b.load(total), term), total)
        return b.load(total)

    def update(combine, v, c):
        """q[i] = combine(q[i], v[i] c) for every i."""
        with counted_loop(b, fn, zero, n) as i:
            at = b.gep(q, [i])
            b.store(combine(b.load(at), b.fmul(b.load(b.gep(v, [i])), c)), at)

    with counted_loop(b, fn, b.sub(pairs, one), ir.Constant(I64, -1), step=-1) as k:
        r, sk, yk = row(k)
        a = b.fmul(b.load(b.gep(rho, [r])), dot(sk, q))
        b.store(a, b.gep(alpha, [r]))
        update(b.fsub, yk, a)
    r, _, yk = row(b.sub(pairs, one))
    gamma = b.fdiv(ir.Constant(F64, 1.0), b.fmul(b.load(b.gep(rho, [r])), dot(yk, yk)))
    with counted_loop(b, fn, zero, n) as i:
        at = b.gep(q, [i])
        b.store(b.fmul(b.load(at), gamma), at)
    with counted_loop(b, fn, zero, pairs) as k:
        r, sk, yk = row(k)
        beta = b.fmul(b.load(b.gep(rho, [r])), dot(yk, q))
        update(b.fadd, sk, b.fsub(b.load(b.gep(alpha, [r])), beta))
    with counted_loop(b, fn, zero, n) as i:
        at = b.gep(q, [i])
        b.store(b.fneg(b.load(at)), at)
    b.ret(ir.Constant(I32, abi.OK))
