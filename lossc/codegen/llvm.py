"""Graph -> LLVM IR (through llvmlite.ir).

Each model becomes a module with two functions of one signature:

    i32 lossc_value_and_grad(T* params, T* hypers, i8** inputs, i64 B,
                             T* out, T* work, i64* err)
    i32 lossc_loss(...same...)

`params` is the flat parameter vector, `hypers` the hyperparameters in declaration
order, `inputs[k]` the k-th input's (B, *shape) array (int inputs as i64), `out[0]`
the objective and `out[1:]` the flat gradient, `work` scratch space of `work_size`
elements for tensor values. The return value is 0, or 1 when a data-dependent index
was out of range: `err` then holds (check id, sample, value).

The body is: a prologue computing every value that no input reaches (once per call),
a loop over the B samples computing the per-sample values and accumulating the
".sample" outputs, and an epilogue combining them with the ".once" outputs (see
passes/hoist.py).

How a node's elements are produced (`elem`):
  - rank-0 values of elementwise ops are SSA values, computed once, in order;
  - tensor ops (reductions, matmul, softmax) fill a buffer in `work` with loops;
  - elementwise tensors used once by an elementwise consumer or a single-pass
    reduction are fused: computed on demand inside the consumer's loop;
  - views (broadcast, transpose, take, slice, ...) map the index, no copy;
  - leaves load from the arguments.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from math import prod

from llvmlite import ir

from lossc.ir.graph import BOOL, INT, Graph, Node
from lossc.ir.ops import OPS
from lossc.passes.hoist import varying

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
I8P = ir.IntType(8).as_pointer()
FAST = ("reassoc", "contract")  # for batch and tensor reductions only: see docs

# LLVM intrinsics; everything else is a libm call (tanhf etc. for float32)
_INTRINSICS = {"exp", "log", "sqrt", "sin", "cos", "fabs", "pow"}
_LIBM = {"log1p", "expm1", "tan", "tanh", "sinh", "cosh", "asin", "acos", "atan",
         "atan2", "erf"}
# tensor ops that read each input element exactly once (so a fused input is fine)
_SINGLE_PASS = {"sum", "max", "min", "prod", "norm"}

FUNCTIONS = ("lossc_value_and_grad", "lossc_loss")


class Layout:
    """Where a compiled model's values live: sizes the runtime must allocate."""

    def __init__(self, work_size: int, n_params: int):
        self.work_size = work_size
        self.n_params = n_params


def build_module(graph: Graph, dtype: str = "float64", triple: str = "",
                 data_layout: str = "") -> tuple[ir.Module, Layout]:
    """The LLVM module for a graph that has been through the whole pass pipeline."""
    module = ir.Module(name="lossc_model")
    if triple:
        module.triple = triple
    if data_layout:
        module.data_layout = data_layout
    work = 0
    for name, want_grad in (("lossc_value_and_grad", True), ("lossc_loss", False)):
        fc = FunctionCodegen(module, graph, dtype, want_grad, name)
        fc.generate()
        work = max(work, fc.work_size)
    n_params = sum(p.size for p in graph.params)
    return module, Layout(max(work, 1), n_params)


class FunctionCodegen:
    def __init__(self, module: ir.Module, graph: Graph, dtype: str, want_grad: bool, name: str):
        self.module = module
        self.graph = graph
        self.T = ir.DoubleType() if dtype == "float64" else ir.FloatType()
        self.suffix = "" if dtype == "float64" else "f"
        self.want_grad = want_grad
        ptr = self.T.as_pointer()
        fnty = ir.FunctionType(I32, [ptr, ptr, I8P.as_pointer(), I64, ptr, ptr,
                                     I64.as_pointer()])
        self.fn = ir.Function(module, fnty, name=name)
        for a, n in zip(self.fn.args, ("params", "hypers", "inputs", "B", "out", "work", "err")):
            a.name = n
        self.fn.attributes.add("nounwind")
        for a in (self.fn.args[0], self.fn.args[1], self.fn.args[4], self.fn.args[5]):
            a.add_attribute("noalias")
        self.params, self.hypers, self.inputs, self.B, self.out, self.work, self.err = \
            self.fn.args
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.fn.append_basic_block("prologue"))
        self.values: dict[int, ir.Value] = {}     # SSA scalars
        self.buffers: dict[int, ir.Value] = {}    # pointers into work
        self.work_size = 0
        self.sample = None        # i64 loop variable while inside the sample loop
        self.input_rows: dict[int, ir.Value] = {}

    # ------------------------------------------------------------ planning

    def outputs(self) -> dict[str, Node]:
        keep = {}
        for k, v in self.graph.outputs.items():
            base = k.rsplit(".", 1)[0]
            if base == "loss" or (self.want_grad and base.startswith("grad.")):
                keep[k] = v
        return keep

    def plan(self, outs: dict[str, Node]) -> None:
        g = self.graph
        live = g.reachable(outs.values())
        self.live = [n for n in g.nodes if n.id in live]
        self.vary = varying(g)
        uses: dict[int, list[Node]] = {n.id: [] for n in self.live}
        for n in self.live:
            for i in n.inputs:
                uses[i.id].append(n)
        out_ids = {v.id for v in outs.values()}
        self.materialize: set[int] = set()
        for n in self.live:
            kind = OPS[n.op].kind
            if kind == "tensor":
                self.materialize.add(n.id)
            elif kind == "elem" and n.rank > 0:
                us = uses[n.id]
                fused_ok = (len(us) == 1 and n.id not in out_ids
                            and (OPS[us[0].op].kind == "elem" or us[0].op in _SINGLE_PASS)
                            and not (n.id not in self.vary and us[0].id in self.vary))
                if not fused_ok:
                    self.materialize.add(n.id)

    # ------------------------------------------------------------ emission

    def generate(self) -> None:
        outs = self.outputs()
        self.plan(outs)
        b = self.b
        # prologue: zero the outputs, compute everything no input reaches
        n_out = 1 + (sum(p.size for p in self.graph.params) if self.want_grad else 0)
        with self.loop(n_out) as j:
            b.store(self.fconst(0), b.gep(self.out, [j]))
        for n in self.live:
            if n.id not in self.vary:
                self.emit_node(n)
        loss_acc = self.alloca(self.T, "loss_acc")
        b.store(self.fconst(0), loss_acc)
        sample_outs = {k: v for k, v in outs.items() if k.endswith(".sample")}
        has_inputs = any(n.op == "input" for n in self.live)
        if sample_outs or has_inputs:
            with self.loop(self.B) as i:
                self.sample = i
                self.input_rows = {}
                for n in self.live:   # row pointers first: they must dominate every use
                    if n.op == "input":
                        self.input_row(n)
                for n in self.live:
                    if n.id in self.vary:
                        self.emit_node(n)
                for k, node in sample_outs.items():
                    self.accumulate(k, node, loss_acc)
                self.sample = None
        self.epilogue(outs, loss_acc)
        b.ret(ir.Constant(I32, 0))
        # allocas live in the entry block so LLVM promotes them to registers
        ir.IRBuilder(self.entry).branch(self.fn.blocks[1])

    def emit_node(self, n: Node) -> None:
        d = OPS[n.op]
        if n.id in self.materialize:
            self.buffers[n.id] = self.buffer(n.size)
            if d.kind == "tensor":
                d.lower(self, n)
            else:
                with self.loops(n.shape) as idx:
                    self.store(n, idx, self.compute(n, idx))
        elif d.kind == "elem" and n.rank == 0:
            self.values[n.id] = self.compute(n, ())
        elif d.kind == "leaf" and n.op == "const":
            self.values[n.id] = self.fconst(n.attr("value"))

    def compute(self, n: Node, idx: tuple) -> ir.Value:
        """The element of n at idx, from its op's lowering rule."""
        d = OPS[n.op]
        if d.kind == "elem":
            return d.lower(self, n, *[self.elem(i, idx) for i in n.inputs])
        return d.lower(self, n, idx)

    def elem(self, n: Node, idx: tuple) -> ir.Value:
        if n.id in self.values:
            return self.values[n.id]
        if n.id in self.buffers:
            v = self.b.load(self.b.gep(self.buffers[n.id], [self.flat(n.shape, idx)]))
            # buffers hold reals; a bool tensor is kept as 0.0/1.0
            return self.b.fcmp_ordered("!=", v, self.fconst(0)) if n.dtype == BOOL else v
        if n.op == "param":
            off = self.b.add(self.iconst(n.attr("offset")), self.flat(n.shape, idx))
            return self.b.load(self.b.gep(self.params, [off]))
        if n.op == "hyper":
            return self.b.load(self.b.gep(self.hypers, [self.iconst(n.attr("index"))]))
        if n.op == "input":
            row = self.input_row(n)
            return self.b.load(self.b.gep(row, [self.flat(n.shape, idx)]))
        return self.compute(n, idx)

    def store(self, n: Node, idx: tuple, v: ir.Value) -> None:
        if n.dtype == BOOL:
            v = self.select(v, self.fconst(1), self.fconst(0))
        self.b.store(v, self.b.gep(self.buffers[n.id], [self.flat(n.shape, idx)]))

    def input_row(self, n: Node) -> ir.Value:
        """Pointer to this sample's row of an input (computed once per sample)."""
        k = n.attr("index")
        if k not in self.input_rows:
            b = self.b
            ty = I64 if n.dtype == INT else self.T
            base = b.bitcast(b.load(b.gep(self.inputs, [self.iconst(k)])), ty.as_pointer())
            start = b.mul(self.sample, self.iconst(max(n.size, 1)))
            self.input_rows[k] = b.gep(base, [start])
        return self.input_rows[k]

    def accumulate(self, key: str, node: Node, loss_acc) -> None:
        b = self.b
        if key.startswith("loss"):
            b.store(b.fadd(b.load(loss_acc), self.elem(node, ()), flags=FAST), loss_acc)
            return
        spec = self.param_spec(key)
        with self.loops(node.shape) as idx:
            p = b.gep(self.out, [b.add(self.iconst(1 + spec.offset), self.flat(node.shape, idx))])
            b.store(b.fadd(b.load(p), self.elem(node, idx), flags=FAST), p)

    def epilogue(self, outs: dict, loss_acc) -> None:
        """objective = scale * (sum of per-sample terms) + mult * (once terms)."""
        b = self.b
        nB = b.sitofp(self.B, self.T)
        if self.graph.reduce == "sum":
            scale, mult = self.fconst(1), nB
        else:
            scale, mult = b.fdiv(self.fconst(1), nB), self.fconst(1)
        loss = b.fmul(b.load(loss_acc), scale)
        if "loss.once" in outs:
            loss = b.fadd(loss, b.fmul(self.elem(outs["loss.once"], ()), mult))
        b.store(loss, self.out)
        if not self.want_grad:
            return
        for spec in self.graph.params:
            once = outs.get(f"grad.{spec.name}.once")
            with self.loops(spec.shape) as idx:
                p = b.gep(self.out, [b.add(self.iconst(1 + spec.offset),
                                           self.flat(spec.shape, idx))])
                v = b.fmul(b.load(p), scale)
                if once is not None:
                    v = b.fadd(v, b.fmul(self.elem(once, idx), mult))
                b.store(v, p)

    def param_spec(self, key: str):
        name = key[len("grad."):].rsplit(".", 1)[0]
        return next(p for p in self.graph.params if p.name == name)

    # ------------------------------------------------------------ loops & memory

    def alloca(self, ty, name=""):
        with self.b.goto_block(self.entry):
            return self.b.alloca(ty, name=name)

    def buffer(self, size: int) -> ir.Value:
        off = self.work_size
        self.work_size += max(size, 1)
        return self.b.gep(self.work, [self.iconst(off)])

    @contextmanager
    def loop(self, n):
        """for i in range(n): the body is whatever the with-block emits."""
        b = self.b
        count = self.iconst(n) if isinstance(n, int) else n
        pre = b.block
        header = self.fn.append_basic_block("loop")
        body = self.fn.append_basic_block("body")
        done = self.fn.append_basic_block("done")
        b.branch(header)
        b.position_at_end(header)
        i = b.phi(I64, name="i")
        i.add_incoming(self.iconst(0), pre)
        b.cbranch(b.icmp_signed("<", i, count), body, done)
        b.position_at_end(body)
        yield i
        nxt = b.add(i, self.iconst(1))
        i.add_incoming(nxt, b.block)
        b.branch(header)
        b.position_at_end(done)

    @contextmanager
    def loops(self, shape: tuple):
        """Nested loops over every index of `shape`; yields the index tuple."""
        if not shape:
            yield ()
            return
        with self.loop(shape[0]) as i:
            with self.loops(shape[1:]) as rest:
                yield (i,) + rest

    def flat(self, shape: tuple, idx: tuple) -> ir.Value:
        off = None
        stride = 1
        for s, i in reversed(list(zip(shape, idx))):
            term = i if stride == 1 else self.b.mul(i, self.iconst(stride))
            off = term if off is None else self.b.add(off, term)
            stride *= s
        return off if off is not None else self.iconst(0)

    def unflatten(self, shape: tuple, j: ir.Value) -> tuple:
        if len(shape) <= 1:
            return (j,)[:len(shape)]
        inner = self.iconst(shape[1])
        return (self.b.udiv(j, inner), self.b.urem(j, inner))

    # ------------------------------------------------------------ scalar helpers

    def fconst(self, v) -> ir.Value:
        return ir.Constant(self.T, float(v))

    def iconst(self, v) -> ir.Value:
        return ir.Constant(I64, int(v))

    def select(self, c, a, b):
        return self.b.select(c, a, b)

    def fcmp(self, sym: str, a, b):
        if sym == "!=":
            return self.b.fcmp_unordered("!=", a, b)
        return self.b.fcmp_ordered(sym, a, b)

    def icmp(self, sym: str, a, b):
        return self.b.icmp_signed(sym, a, b)

    def to_real(self, x):
        return self.b.sitofp(x, self.T)

    def math(self, name: str, *args):
        if name in _INTRINSICS:
            f = self.module.declare_intrinsic("llvm." + name, [self.T])
        else:
            assert name in _LIBM, name
            fname = name + self.suffix
            f = self.module.globals.get(fname)
            if f is None:
                f = ir.Function(self.module, ir.FunctionType(self.T, [self.T] * len(args)),
                                name=fname)
                f.attributes.add("nounwind")
        return self.b.call(f, list(args))

    def sigmoid(self, x):
        b = self.b
        e = self.math("exp", b.fneg(self.math("fabs", x)))
        den = b.fadd(self.fconst(1), e)
        return self.select(self.fcmp(">=", x, self.fconst(0)),
                           b.fdiv(self.fconst(1), den), b.fdiv(e, den))

    def softplus(self, x):
        b = self.b
        pos = self.select(self.fcmp(">", x, self.fconst(0)), x, self.fconst(0))
        return b.fadd(pos, self.math("log1p", self.math("exp", b.fneg(self.math("fabs", x)))))

    def powi(self, x, n: int):
        b = self.b
        result, base, k = None, x, abs(n)
        while k:
            if k & 1:
                result = base if result is None else b.fmul(result, base)
            k >>= 1
            if k:
                base = b.fmul(base, base)
        if result is None:
            result = self.fconst(1)
        return b.fdiv(self.fconst(1), result) if n < 0 else result

    def check_index(self, n: Node, i):
        """Return i, after branching out with an error if it is outside 0..size-1."""
        b = self.b
        bad = b.icmp_unsigned(">=", i, self.iconst(n.attr("size")))
        with b.if_then(bad, likely=False):
            for k, v in enumerate((self.iconst(n.attr("check")),
                                   self.sample if self.sample is not None else self.iconst(-1),
                                   i)):
                b.store(v, b.gep(self.err, [self.iconst(k)]))
            b.ret(ir.Constant(I32, 1))
        return i

    # ------------------------------------------------------------ tensor lowerings

    def reduce_parts(self, n: Node, axes):
        x = n.inputs[0]
        kept = tuple(a for a in range(x.rank) if a not in axes)
        return x, kept, tuple(x.shape[a] for a in kept), tuple(x.shape[a] for a in axes)

    @staticmethod
    def merge(kept, kidx, axes, ridx, rank):
        full = [None] * rank
        for a, v in zip(kept, kidx):
            full[a] = v
        for a, v in zip(axes, ridx):
            full[a] = v
        return tuple(full)

    def fold_group(self, x, kept, kidx, axes, rshape, init, step, flags=()):
        """acc = init; for each element v of the group: acc = step(acc, v)."""
        b = self.b
        acc = self.alloca(self.T)
        b.store(init, acc)
        with self.loops(rshape) as ridx:
            v = self.elem(x, self.merge(kept, kidx, axes, ridx, x.rank))
            b.store(step(b.load(acc), v), acc)
        return b.load(acc)

    def group_max(self, x, kept, kidx, axes, rshape, kind="max"):
        sym = ">" if kind == "max" else "<"
        init = self.fconst(-math.inf if kind == "max" else math.inf)
        # strict comparison keeps the first extremum; NaN propagates as in NumPy
        return self.fold_group(x, kept, kidx, axes, rshape, init, lambda a, v: self.select(
            self.b.or_(self.fcmp(sym, v, a), self.b.fcmp_unordered("uno", v, v)), v, a))

    def safe_shift(self, m):
        """The max to subtract in logsumexp/softmax: 0 when it is infinite."""
        b = self.b
        finite = b.fcmp_ordered("<", self.math("fabs", m), self.fconst(math.inf))
        return self.select(finite, m, self.fconst(0))

    def lower_reduce(self, n: Node, kind: str) -> None:
        b = self.b
        axes = n.attr("axes")
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        with self.loops(kshape) as kidx:
            if kind == "sum":
                r = self.fold_group(x, kept, kidx, axes, rshape, self.fconst(0),
                                    lambda a, v: b.fadd(a, v, flags=FAST))
            elif kind == "prod":
                r = self.fold_group(x, kept, kidx, axes, rshape, self.fconst(1),
                                    lambda a, v: b.fmul(a, v, flags=FAST))
            elif kind == "norm":
                s = self.fold_group(x, kept, kidx, axes, rshape, self.fconst(0),
                                    lambda a, v: b.fadd(a, b.fmul(v, v), flags=FAST))
                r = self.math("sqrt", s)
            elif kind in ("max", "min"):
                r = self.group_max(x, kept, kidx, axes, rshape, kind)
            elif kind == "logsumexp":
                m = self.safe_shift(self.group_max(x, kept, kidx, axes, rshape))
                s = self.fold_group(x, kept, kidx, axes, rshape, self.fconst(0),
                                    lambda a, v: b.fadd(a, self.math("exp", b.fsub(v, m)),
                                                        flags=FAST))
                r = b.fadd(m, self.math("log", s))
            else:
                raise AssertionError(kind)
            self.store(n, kidx, r)

    def lower_argext(self, n: Node) -> None:
        b = self.b
        axes, kind = n.attr("axes"), n.attr("kind")
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        found = self.alloca(I1)
        with self.loops(kshape) as kidx:
            m = self.group_max(x, kept, kidx, axes, rshape, kind)
            b.store(ir.Constant(I1, 0), found)
            with self.loops(rshape) as ridx:
                full = self.merge(kept, kidx, axes, ridx, x.rank)
                hit = b.and_(self.fcmp("==", self.elem(x, full), m), b.not_(b.load(found)))
                b.store(b.or_(b.load(found), hit), found)
                self.store(n, full, self.select(hit, self.fconst(1), self.fconst(0)))

    def lower_prod_others(self, n: Node) -> None:
        """Exclusive products by a forward then a backward sweep: no division, so
        zeros get their exact gradient."""
        b = self.b
        axes = n.attr("axes")
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        count = prod(rshape)
        run = self.alloca(self.T)
        with self.loops(kshape) as kidx:
            b.store(self.fconst(1), run)
            with self.loop(count) as j:
                full = self.merge(kept, kidx, axes, self.unflatten(rshape, j), x.rank)
                self.store(n, full, b.load(run))
                b.store(b.fmul(b.load(run), self.elem(x, full)), run)
            b.store(self.fconst(1), run)
            with self.loop(count) as j:
                jr = b.sub(self.iconst(count - 1), j)
                full = self.merge(kept, kidx, axes, self.unflatten(rshape, jr), x.rank)
                p = b.gep(self.buffers[n.id], [self.flat(n.shape, full)])
                b.store(b.fmul(b.load(p), b.load(run)), p)
                b.store(b.fmul(b.load(run), self.elem(x, full)), run)

    def lower_softmax(self, n: Node, log: bool) -> None:
        b = self.b
        axes = (n.attr("axis"),)
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        with self.loops(kshape) as kidx:
            m = self.safe_shift(self.group_max(x, kept, kidx, axes, rshape))
            s = self.fold_group(x, kept, kidx, axes, rshape, self.fconst(0),
                                lambda a, v: b.fadd(a, self.math("exp", b.fsub(v, m)),
                                                    flags=FAST))
            logs = self.math("log", s) if log else None
            with self.loops(rshape) as ridx:
                full = self.merge(kept, kidx, axes, ridx, x.rank)
                shifted = b.fsub(self.elem(x, full), m)
                v = b.fsub(shifted, logs) if log else b.fdiv(self.math("exp", shifted), s)
                self.store(n, full, v)

    def lower_matmul(self, n: Node) -> None:
        b = self.b
        x, y = n.inputs
        K = x.shape[-1]
        with self.loops(n.shape) as idx:
            acc = self.alloca(self.T)
            b.store(self.fconst(0), acc)
            with self.loop(K) as k:
                xi = (idx[0], k) if x.rank == 2 else (k,)
                yi = (k, idx[-1]) if y.rank == 2 else (k,)
                prod_ = b.fmul(self.elem(x, xi), self.elem(y, yi))
                b.store(b.fadd(b.load(acc), prod_, flags=FAST), acc)
            self.store(n, idx, b.load(acc))
