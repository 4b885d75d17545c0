"""Fused training: a run of mini-batch optimizer steps in one native call.

    i32 lossc_train_steps_sgd(i64* frame)       (and _rmsprop, _adam)

For each batch k in first .. first+count-1 of an epoch, it gathers the batch's rows
(order[k*bs .. k*bs+bs-1], the last batch holding the remainder) into contiguous
buffers, runs the value-and-gradient function on them, stores the objective in
losses[k], stops (returns DIVERGED, the error record's batch k) if the objective or
any gradient element is NaN or infinite, and applies the optimizer's update in place. The arithmetic of each
update is written out in the same order as lossc/optim/optimizers.py, so in float64
a fused run gives bit for bit the parameters of the Python loop (tested).

Nothing in these functions depends on the model: the number of parameters and the
inputs' row sizes come in the frame, and the gradient is called through its address.
So one object per optimizer and dtype serves every model, compiled once per machine
(runtime/library.py), and a cold start compiles only the model's gradient.

The frame is codegen/abi.py's TRAIN_STEPS (with its TRAIN_CONFIG and TRAIN_FLAGS
records): the parameters, hyperparameters and data; the epoch's order and which of its
batches to take; the optimizer's configuration, state and step count; buffers for a
batch's rows, its gradient and objective, the objectives of every batch; the gradient
function's address; the sizes; and room for the rows of a later batch to prefetch.
Return: OK; INDEX_ERROR (the error record as for lossc_value_and_grad, the sample
counted in the whole data set); DIVERGED, a non-finite objective or gradient at the
error record's batch.
"""
from __future__ import annotations

from functools import partial

from llvmlite import ir

from lossc.codegen import abi
from lossc.codegen.unit_names import train_function
from lossc.codegen.abi import (ERROR, ROW_GRADS, TRAIN_CONFIG, TRAIN_FLAGS, TRAIN_STEPS,
                               VALUE_AND_GRAD)
from lossc.codegen.prefetch import UPDATE_AHEAD_ROWS, UPDATE_LOCALITY, prefetch_span
from lossc.codegen.values import I8P, I32, I64, ValueEmitter, counted_loop


KINDS = abi.OPTIMIZER_KINDS
# the batch whose rows a gradient prefetches: this many on. The next one's prefetches
# would still be on their way when its gather starts; a few batches on, they have
# arrived (docs/training.md has the measured choice)
AHEAD_BATCHES = 3
# Adam's bias correction 1 - beta^t is taken as settled at 1 for beta up to this: beta^t
# then shrinks by far more than an ulp a step (bias_correction)
SETTLE_MAX = 1 - 2.0 ** -20


def function_name(kind: str) -> str:
    return train_function(kind)


def emit_train_steps(module: ir.Module, kind: str, T) -> None:
    """The steps of one optimizer (a key of KINDS) for parameters of type T."""
    fn = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer()]),
                     name=function_name(kind))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    em = _Emitter(module, T, b, fn)
    frame = fn.args[0]

    def slot(name):
        return TRAIN_STEPS.load(b, frame, name, T=T)

    params, hypers, data, N, order = (slot(k) for k in ("params", "hypers", "data", "N",
                                                        "order"))
    bs, first, count = slot("batch_size"), slot("first"), slot("count")
    config, flags, state, tptr = (slot(k) for k in ("config", "flags", "state", "t"))
    batch, losses, work, err = (slot(k) for k in ("batches", "losses", "work", "err"))
    grad, value = slot("grad"), slot("value")
    n, n_inputs, row_bytes = slot("n_params"), slot("n_inputs"), slot("row_bytes")
    ahead = slot("ahead")
    frozen = slot("frozen")
    sparse, segments, n_segments = slot("sparse"), slot("segments"), slot("n_segments")
    segs = _Segments(em, segments, n_segments, sparse)
    # (the rules the touched rows take: SGD's and Adam's lazy one)
    segmented = (b.icmp_unsigned("!=", b.ptrtoint(segments, I64), em.iconst(0))
                 if kind in ("sgd", "adam") else ir.Constant(ir.IntType(1), 0))
    any_frozen = b.icmp_unsigned("!=", b.ptrtoint(frozen, I64), em.iconst(0))
    vg_type = ir.FunctionType(I32, [I64.as_pointer()])
    vg = TRAIN_STEPS.load(b, frame, "gradient", ty=vg_type.as_pointer())
    # the gradient's frame: everything but the row count and the rows to prefetch is
    # the same for every batch
    vg_frame = b.bitcast(em.alloca(ir.ArrayType(I64, len(VALUE_AND_GRAD))), I64.as_pointer())
    for name, v in (("params", params), ("hypers", hypers), ("inputs", batch),
                    ("value", value), ("work", work), ("err", err), ("grad", grad),
                    ("ahead", ahead), ("sparse", sparse)):
        VALUE_AND_GRAD.store(b, vg_frame, name, v)
    # the gradient prefetches a later batch's rows from the list in `ahead` (if any)
    prefetch = b.icmp_unsigned("!=", b.ptrtoint(ahead, I64), em.iconst(0))

    def flag(name):
        return b.icmp_signed("!=", TRAIN_FLAGS.load(b, flags, name), em.iconst(0))

    lr, a, bb, eps, wd, damp, clip, half = (TRAIN_CONFIG.load(b, config, s.name)
                                            for s in TRAIN_CONFIG.slots)
    nesterov, centered, amsgrad, decoupled, clip_on = (
        flag(k) for k in ("nesterov", "centered", "amsgrad", "decoupled", "clip"))
    m_state = state
    v_state = b.gep(state, [n])
    w_state = b.gep(state, [b.add(n, n)])
    if kind == "adam":
        # its bias corrections 1 - beta^t, each settled once it rounds to 1 (see
        # bias_correction): beta1's, beta2's root, and beta2's (the lazy rule's)
        settled = [em.alloca(ir.IntType(1)) for _ in range(3)]
        for flag_var in settled:
            b.store(ir.Constant(ir.IntType(1), 0), flag_var)

    with em.loop(b.add(first, count), start=first) as k:
        lo = b.mul(k, bs)
        hi = b.add(lo, bs)
        hi = b.select(b.icmp_signed("<", hi, N), hi, N)
        rows = b.sub(hi, lo)
        # gather the batch's rows into contiguous buffers
        with em.loop(n_inputs) as j:
            src = b.load(b.gep(data, [j]))
            dst = b.load(b.gep(batch, [j]))
            nbytes = b.load(b.gep(row_bytes, [j]))
            with em.loop(rows) as r:
                row = b.load(b.gep(order, [b.add(lo, r)]))
                em.copy_bytes(b.gep(dst, [b.mul(r, nbytes)]),
                              b.gep(src, [b.mul(row, nbytes)]), nbytes)
        VALUE_AND_GRAD.store(b, vg_frame, "B", rows)
        # the rows of the batch AHEAD_BATCHES on, for the gradient to prefetch as it
        # goes (llvm.py prefetch_ahead): input by input, the address of each row
        ahead_rows = em.alloca(I64)
        b.store(em.iconst(0), ahead_rows)
        with b.if_then(b.and_(prefetch, b.icmp_signed("<", b.add(k, em.iconst(AHEAD_BATCHES)),
                                                      b.add(first, count)))):
            lo2 = b.add(hi, b.mul(bs, em.iconst(AHEAD_BATCHES - 1)))
            hi2 = b.add(lo2, bs)
            hi2 = b.select(b.icmp_signed("<", hi2, N), hi2, N)
            rows2 = b.sub(hi2, lo2)
            with em.loop(n_inputs) as j:
                src = b.ptrtoint(b.load(b.gep(data, [j])), I64)
                nbytes = b.load(b.gep(row_bytes, [j]))
                out = b.gep(ahead, [b.mul(j, rows2)])
                with em.loop(rows2) as r:
                    row = b.load(b.gep(order, [b.add(lo2, r)]))
                    b.store(b.add(src, b.mul(row, nbytes)), b.gep(out, [r]))
            b.store(rows2, ahead_rows)
        VALUE_AND_GRAD.store(b, vg_frame, "ahead_rows", b.load(ahead_rows))
        rc = b.call(vg, [vg_frame])
        with b.if_then(b.icmp_signed("!=", rc, ir.Constant(I32, abi.OK)), likely=False):
            # the failing sample, counted in the whole data set
            in_batch = ERROR.load(b, err, "sample")
            ERROR.store(b, err, "sample", b.load(b.gep(order, [b.add(lo, in_batch)])))
            b.ret(rc)
        loss = b.load(value)
        b.store(loss, b.gep(losses, [k]))
        # stop on a non-finite objective or gradient, before touching the parameters
        bad = em.alloca(ir.IntType(1))
        b.store(em.not_finite(loss), bad)

        def check(g, j):
            b.store(b.or_(b.load(bad), em.not_finite(b.load(b.gep(g, [j])))), bad)
        with b.if_else(segmented) as (by_segments, whole):
            with by_segments:
                segs.each(lambda j: check(grad, j), lambda j, grads, gj: check(grads, gj))
            with whole:
                with em.loop(n) as j:
                    check(grad, j)
        with b.if_then(b.load(bad), likely=False):
            ERROR.store(b, err, "batch", k)
            b.ret(ir.Constant(I32, abi.DIVERGED))
        # a frozen parameter's gradient is 0 (it counts for nothing in the clipping
        # norm), as the Python steps take it (lossc.optim.freeze)
        with b.if_then(any_frozen, likely=False):
            with em.loop(n) as j:
                gp = b.gep(grad, [j])
                keep = b.icmp_unsigned("!=", b.load(b.gep(frozen, [j])),
                                       ir.Constant(ir.IntType(8), 0))
                b.store(b.select(keep, ir.Constant(T, 0.0), b.load(gp)), gp)
        t = b.add(b.load(tptr), em.iconst(1))
        b.store(t, tptr)
        # gradient clipping by the global norm (torch.nn.utils.clip_grad_norm_)
        with b.if_then(clip_on):
            sq = em.alloca(ir.DoubleType())
            b.store(ir.Constant(ir.DoubleType(), 0.0), sq)
            with em.loop(n) as j:
                g = em.d(b.load(b.gep(grad, [j])))
                b.store(b.fadd(b.load(sq), b.fmul(g, g)), sq)
            norm = em.call_d("sqrt", b.load(sq))
            coef = b.fdiv(clip, b.fadd(norm, ir.Constant(ir.DoubleType(), 1e-6)))
            with b.if_then(b.fcmp_ordered("<", coef, ir.Constant(ir.DoubleType(), 1.0))):
                scale = em.t(coef)
                with em.loop(n) as j:
                    p = b.gep(grad, [j])
                    b.store(b.fmul(b.load(p), scale), p)
        tf = b.sitofp(t, ir.DoubleType())
        args = dict(lr=lr, a=a, b=bb, eps=eps, wd=wd, damp=damp, t=tf, nesterov=nesterov,
                    centered=centered, amsgrad=amsgrad, decoupled=decoupled, params=params,
                    grad=grad, m=m_state, v=v_state, w=w_state)
        if kind == "adam":
            args.update(bc1=em.bias_correction(a, tf, settled[0]),
                        bc2_sqrt=em.bias_correction(bb, tf, settled[1], root=half))
        rule = getattr(em, kind)
        with b.if_else(segmented) as (by_segments, whole):
            with by_segments:
                # the touched rows of row-sparse parameters only, the others whole: set
                # where that is the dense step exactly (SGD without momentum or weight
                # decay) or asked for (lazy Adam); never with frozen ones or clipping
                row_rule = em.sgd_rows
                if kind == "adam":
                    bc2 = em.bias_correction(bb, tf, settled[2])
                    row_rule = partial(em.sparse_adam, step=em.lazy_step_size(
                        lr, args["bc1"], bc2))
                segs.each(lambda j: rule(j=j, **args),
                          lambda j, grads, gj: row_rule(j=j, gj=gj, **dict(args, grad=grads)),
                          prefetch_params=params)
            with whole:
                em.dense_update(rule, args, n, params, frozen, any_frozen)
    b.ret(ir.Constant(I32, abi.OK))


class _Segments:
    """The parameters as the training steps' `segments` describe them: `each(dense,
    rows, prefetch_params)` emits dense(j) for each element of a parameter updated
    whole, and rows(j, grads, gj) for each element of a touched row of the others (j
    its index among the parameters, gj in the record's `grads`); given the parameters
    (`prefetch_params`, for the update: not for a pass that reads the gradient only),
    it prefetches each touched row UPDATE_AHEAD_ROWS slots ahead (prefetch_row)."""

    def __init__(self, em, segments, n_segments, sparse):
        self.em, self.segments, self.n, self.sparse = em, segments, n_segments, sparse

    def each(self, dense, rows, prefetch_params=None) -> None:
        em, b = self.em, self.em.b
        with em.loop(self.n) as k:
            off, size, rec, width = (b.load(b.gep(self.segments, [
                b.add(b.mul(k, em.iconst(4)), em.iconst(f))])) for f in range(4))
            with b.if_else(b.icmp_signed("<", rec, em.iconst(0))) as (whole, touched):
                with whole:
                    with em.loop(b.add(off, size), start=off) as j:
                        dense(j)
                with touched:
                    at = b.mul(rec, em.iconst(len(ROW_GRADS)))
                    count = ROW_GRADS.load(b, self.sparse, "count", at=at)
                    listed = ROW_GRADS.load(b, self.sparse, "rows", at=at)
                    grads = ROW_GRADS.load(b, self.sparse, "grads", T=em.T, at=at)
                    with em.loop(count) as s:
                        if prefetch_params is not None:
                            self.prefetch_row(prefetch_params, off, width, listed, count, s)
                        base = b.add(off, b.mul(b.load(b.gep(listed, [s])), width))
                        gbase = b.mul(s, width)
                        with em.loop(width) as c:
                            rows(b.add(base, c), grads, b.add(gbase, c))

    def prefetch_row(self, params, off, width, listed, count, s) -> None:
        """Prefetch the parameter row the update takes UPDATE_AHEAD_ROWS slots after
        slot s (none past the last). The rows were read during the gradient, but a
        batch's rows and their gradients can outgrow L2, and the rows read first are
        then the first evicted: the update, in slot order, would wait for each from
        further out, one row at a time. (Lazy Adam's rows of m and v, at the same
        places in the state, are not prefetched: its steps were not measured at such
        sizes.)"""
        em, b = self.em, self.em.b
        ahead = b.add(s, em.iconst(UPDATE_AHEAD_ROWS))
        with b.if_then(b.icmp_signed("<", ahead, count)):
            first = b.add(off, b.mul(b.load(b.gep(listed, [ahead])), width))
            prefetch_span(em, b.bitcast(b.gep(params, [first]), I8P),
                          b.mul(width, em.iconst(em.T_bytes)), locality=UPDATE_LOCALITY)


class _Emitter(ValueEmitter):
    """The update rules, element by element. Scalars derived from the configuration are
    computed in double and rounded to T once, as NumPy does with Python floats; array
    arithmetic is in T, one rounding per operation, no FMA (NumPy fuses nothing)."""

    def __init__(self, module, T, b, fn):
        super().__init__(module, T, b)
        self.fn = fn
        self.entry = fn.entry_basic_block

    def alloca(self, ty):
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            return self.b.alloca(ty)

    def loop(self, n, start=None):
        count = self.iconst(n) if isinstance(n, int) else n
        return counted_loop(self.b, self.fn, self.iconst(0) if start is None else start, count)

    def copy_bytes(self, dst, src, nbytes) -> None:
        """Copy nbytes (a multiple of 4) from src to dst: 32 bytes at a time, then one
        16, one 8 and one 4 as the remainder's bits say (a one-number row, a label, is
        one 8-byte copy). A row is a few hundred bytes at most; a call to the C
        library's memcpy would cost more than the copy."""
        b = self.b
        wide = ir.VectorType(I64, 4)
        with self.loop(b.lshr(nbytes, self.iconst(5))) as k:
            at = b.mul(k, self.iconst(32))
            b.store(b.load(b.bitcast(b.gep(src, [at]), wide.as_pointer()), align=4),
                    b.bitcast(b.gep(dst, [at]), wide.as_pointer()), align=4)
        at = b.and_(nbytes, self.iconst(-32))
        for width, ty in ((16, ir.VectorType(I64, 2)), (8, I64), (4, I32)):
            with b.if_then(b.icmp_signed("!=", b.and_(nbytes, self.iconst(width)),
                                         self.iconst(0))):
                s = b.bitcast(b.gep(src, [at]), ty.as_pointer())
                d = b.bitcast(b.gep(dst, [at]), ty.as_pointer())
                b.store(b.load(s, align=4), d, align=4)
            at = b.add(at, b.and_(nbytes, self.iconst(width)))

    def dense_update(self, rule, args, n, params, frozen, any_frozen) -> None:
        """Every parameter from the dense gradient: one straight-line loop (no branch
        inside), element by element the arithmetic of optimizers.py; with frozen
        parameters, a second loop that puts each frozen one back as it was (weight
        decay would move it)."""
        b = self.b
        with b.if_else(any_frozen, likely=False) as (with_frozen, without):
            with with_frozen:
                with self.loop(n) as j:
                    pj = b.gep(params, [j])
                    before = b.load(pj)
                    rule(j=j, **args)
                    keep = b.icmp_unsigned("!=", b.load(b.gep(frozen, [j])),
                                           ir.Constant(ir.IntType(8), 0))
                    b.store(b.select(keep, before, b.load(pj)), pj)
            with without:
                with self.loop(n) as j:
                    rule(j=j, **args)

    def d(self, v):
        return v if isinstance(self.T, ir.DoubleType) else self.b.fpext(v, ir.DoubleType())

    def t(self, v):
        return v if isinstance(self.T, ir.DoubleType) else self.b.fptrunc(v, self.T)

    def call_d(self, name, *args):
        return ValueEmitter(self.module, ir.DoubleType(), self.b).math(name, *args)

    def not_finite(self, v):
        inf = ir.Constant(v.type, float("inf"))
        return self.b.not_(self.b.fcmp_ordered("<", self.intrinsic_call("fabs", v), inf))

    def intrinsic_call(self, name, v):
        return self.b.call(self.intrinsic(name, v.type, 1), [v])

    def one_minus(self, x):
        return self.t(self.b.fsub(ir.Constant(ir.DoubleType(), 1.0), x))

    def el(self, ptr, j):
        return self.b.gep(ptr, [j])

    def sgd(self, j, lr, a, wd, damp, nesterov, t, params, grad, m, gj=None, **_):
        """(gj: where the gradient element is in `grad`, if not at j)"""
        b = self.b
        D = ir.DoubleType()
        pp, mp = self.el(params, j), self.el(m, j)
        p, g = b.load(pp), b.load(self.el(grad, j if gj is None else gj))
        g = self.add_decay(g, p, wd)
        mu = self.t(a)
        use_momentum = b.fcmp_ordered("!=", a, ir.Constant(D, 0.0))
        first = b.fcmp_ordered("==", t, ir.Constant(D, 1.0))
        # buf <- g on the first step, else buf <- buf * mu + (1 - dampening) * g
        buf = b.select(first, g, b.fadd(b.fmul(b.load(mp), mu), b.fmul(self.one_minus(damp), g)))
        b.store(b.select(use_momentum, buf, b.load(mp)), mp)
        stepped = b.select(nesterov, b.fadd(g, b.fmul(mu, buf)), buf)
        g = b.select(use_momentum, stepped, g)
        b.store(b.fsub(p, b.fmul(self.t(lr), g)), pp)

    def sgd_rows(self, j, gj, lr, params, grad, **_):
        """SGD without momentum or weight decay (the only SGD the touched rows take):
        the arithmetic sgd() does then, without touching the state it would not
        change (a step's first touch of a page of state costs more than the step)."""
        b = self.b
        pp = self.el(params, j)
        b.store(b.fsub(b.load(pp), b.fmul(self.t(lr), b.load(self.el(grad, gj)))), pp)

    def add_decay(self, g, p, wd):
        b = self.b
        has = b.fcmp_ordered("!=", wd, ir.Constant(ir.DoubleType(), 0.0))
        return b.select(has, b.fadd(g, b.fmul(self.t(wd), p)), g)

    def rmsprop(self, j, lr, a, b, eps, wd, centered, params, grad, m, v, w, **_):
        bl = self.b
        pp, vp, wp, mp = (self.el(x, j) for x in (params, v, w, m))
        p, g = bl.load(pp), bl.load(self.el(grad, j))
        g = self.add_decay(g, p, wd)
        alpha = self.t(a)
        vv = bl.fadd(bl.fmul(bl.load(vp), alpha), bl.fmul(bl.fmul(self.one_minus(a), g), g))
        bl.store(vv, vp)
        w0 = bl.load(wp)
        ww = bl.fadd(w0, bl.fmul(self.one_minus(a), bl.fsub(g, w0)))   # lerp, as torch
        bl.store(bl.select(centered, ww, bl.load(wp)), wp)
        var = bl.select(centered, bl.fsub(vv, bl.fmul(ww, ww)), vv)
        d = bl.fadd(self.intrinsic_call("sqrt", var), self.t(eps))
        has_mu = bl.fcmp_ordered(">", b, ir.Constant(ir.DoubleType(), 0.0))
        buf = bl.fadd(bl.fmul(bl.load(mp), self.t(b)), bl.fdiv(g, d))
        bl.store(bl.select(has_mu, buf, bl.load(mp)), mp)
        step = bl.select(has_mu, bl.fmul(self.t(lr), buf), bl.fdiv(bl.fmul(self.t(lr), g), d))
        bl.store(bl.fsub(p, step), pp)

    def bias_correction(self, beta, t, settled, root=None):
        """1 - beta^t (a double) as Python's 1 - beta ** t, or with `root` (0.5 from the
        configuration) its square root as Python's (1 - beta ** t) ** 0.5: pow, as torch
        and optimizers.py have it, which differs from sqrt by an ulp now and then (beta
        0.999: at steps 1270, 2582, 3069, ...).

        `settled` (an i1 variable, false at the start of each call) becomes true once
        1 - beta^t is exactly 1, and from then on the call skips the pow calls (calls
        into the C library, costly beside the few operations a step does for each
        parameter of a small model): for 0 <= beta <= SETTLE_MAX, beta^t only shrinks
        as t grows (by a factor beta a step, far more than pow's error of under an
        ulp), so 1 - beta^t stays 1, and so does its root. (beta = 0.9 settles at step
        356; after that a call of up to 256 batches makes one pow call for it instead of
        one a step.)"""
        b = self.b
        D = ir.DoubleType()
        one = ir.Constant(D, 1.0)
        before = b.block
        with b.if_then(b.not_(b.load(settled))):
            bc = b.fsub(one, self.call_d("pow", beta, t))
            shrinks = b.and_(b.fcmp_ordered(">=", beta, ir.Constant(D, 0.0)),
                             b.fcmp_ordered("<=", beta, ir.Constant(D, SETTLE_MAX)))
            b.store(b.and_(shrinks, b.fcmp_ordered("==", bc, one)), settled)
            if root is not None:
                bc = self.call_d("pow", bc, root)
            computed = b.block
        out = b.phi(D)
        out.add_incoming(one, before)
        out.add_incoming(bc, computed)
        return out

    def lazy_step_size(self, lr, bc1, bc2):
        """torch.optim.SparseAdam's lr * math.sqrt(1 - beta2^t) / (1 - beta1^t), in
        double as Python computes it."""
        return self.b.fdiv(self.b.fmul(lr, self.intrinsic_call("sqrt", bc2)), bc1)

    def sparse_adam(self, j, gj, a, b, eps, params, grad, m, v, step, **_):
        """torch.optim.SparseAdam's update of one element of a touched row, operation
        for operation (torch/optim/_functional.py sparse_adam): the moments' changes
        d1 = (g - m)(1 - beta1), d2 = (g^2 - v)(1 - beta2); m += d1, v += d2;
        p += -step (d1 + m_old) / (sqrt(d2 + v_old) + eps)."""
        bl = self.b
        pp, mp, vp = (self.el(x, j) for x in (params, m, v))
        g, mo, vo = bl.load(self.el(grad, gj)), bl.load(mp), bl.load(vp)
        d1 = bl.fmul(bl.fsub(g, mo), self.one_minus(a))
        bl.store(bl.fadd(mo, d1), mp)
        d2 = bl.fmul(bl.fsub(bl.fmul(g, g), vo), self.one_minus(b))
        bl.store(bl.fadd(vo, d2), vp)
        numer = bl.fadd(d1, mo)
        denom = bl.fadd(self.intrinsic_call("sqrt", bl.fadd(d2, vo)), self.t(eps))
        bl.store(bl.fsub(bl.load(pp), bl.fmul(self.t(step), bl.fdiv(numer, denom))), pp)

    def adam(self, j, lr, a, b, eps, wd, amsgrad, decoupled, params, grad, m, v, w, bc1,
             bc2_sqrt, **_):
        bl = self.b
        D = ir.DoubleType()
        pp, mp, vp, wp = (self.el(x, j) for x in (params, m, v, w))
        p, g = bl.load(pp), bl.load(self.el(grad, j))
        has_wd = bl.fcmp_ordered("!=", wd, ir.Constant(D, 0.0))
        shrink = self.t(bl.fsub(ir.Constant(D, 1.0), bl.fmul(lr, wd)))
        p = bl.select(bl.and_(has_wd, decoupled), bl.fmul(p, shrink), p)
        g = bl.select(bl.and_(has_wd, bl.not_(decoupled)), bl.fadd(g, bl.fmul(self.t(wd), p)), g)
        mm = bl.load(mp)
        mm = bl.fadd(mm, bl.fmul(self.one_minus(a), bl.fsub(g, mm)))
        bl.store(mm, mp)
        vv = bl.fadd(bl.fmul(bl.load(vp), self.t(b)), bl.fmul(bl.fmul(self.one_minus(b), g), g))
        bl.store(vv, vp)
        hi = self.b.select(self.b.fcmp_ordered(">", bl.load(wp), vv), bl.load(wp), vv)
        bl.store(bl.select(amsgrad, hi, bl.load(wp)), wp)
        vv = bl.select(amsgrad, hi, vv)
        # NumPy keeps float32 arrays float32 against Python floats (NEP 50): the scalars
        # are rounded to T, the arithmetic is in T
        denom = bl.fadd(bl.fdiv(self.intrinsic_call("sqrt", vv), self.t(bc2_sqrt)),
                        self.t(eps))
        step = bl.fdiv(bl.fmul(self.t(bl.fdiv(lr, bc1)), mm), denom)
        bl.store(bl.fsub(p, step), pp)
