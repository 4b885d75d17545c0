"""Graph -> LLVM IR (through llvmlite.ir).

A model's gradient and its objective are two exported functions of one signature
(each in a code unit of its own, see codegen/units.py),

    i32 lossc_value_and_grad(i64* frame)        i32 lossc_loss(i64* frame)

where `frame` holds the arguments of the function that does the work, one slot each,
as codegen/abi.py declares them (VALUE_AND_GRAD: the parameters, hyperparameters,
inputs, batch size, value, scratch space, error record, gradient, and a later batch's
rows to prefetch); the worker's parameters are those slots, by name. `work` is
scratch space of `work_size` elements for tensor values. The return value is OK, or
INDEX_ERROR when a data-dependent index was out of range: `err` then holds where
(`check_index`, abi.ERROR).

The body is: a prologue computing every value that no input reaches (once per call),
a loop over the B samples computing the per-sample values and accumulating the
".sample" outputs, and an epilogue combining them with the ".once" outputs (see
passes/hoist.py).

SIMD across the batch: the loop takes W samples at a time (W = vector width / element
size: 8 doubles with AVX-512) and every per-sample value is a <W x T> vector whose
lanes are W samples, so even a model whose per-sample work is a handful of scalars runs
on full vectors; with large gradients two groups of W lanes go per iteration
(`groups`), their code interleaved node by node. The last B mod (groups x W) samples
take one more iteration of the same code, on rows copied to a padded buffer, with the
padding lanes' contributions selected away (`tail_bases`). Per-lane gradient
accumulators are summed across lanes once, at the end. Values computed once per call
stay scalars and are splatted where they meet per-sample vectors (`unify`). Without
SIMD (W = 1) or without inputs, the loop is scalar.

How a node's elements are produced (`elem`):
  - rank-0 values of elementwise ops are SSA values, computed once, in order;
  - tensor ops (reductions, matmul, softmax) fill a buffer in `work` with loops;
  - elementwise tensors used once by an elementwise consumer or a single-pass
    reduction are fused: computed on demand inside the consumer's loop (a chain of
    them longer than MAX_FUSED_DEPTH is stored in pieces: `bound_fusion`);
  - views (broadcast, transpose, take, slice, ...) map the index, no copy;
  - leaves load from the arguments.
"""
from __future__ import annotations

from collections import ChainMap
from contextlib import contextmanager

from llvmlite import ir

from lossc.codegen import abi
from lossc.codegen.outer import OuterProducts
from lossc.codegen.rows import RowContractions
from lossc.codegen.tensor import TensorLowering
from lossc.codegen.values import (FAST, I1, I32, I64, ValueEmitter, counted_loop, declared,
                                   is_vector)
from lossc.ir.graph import BOOL, INT, Graph, Node
from lossc.ir.ops import OPS
from lossc.passes.hoist import varying

I8P = ir.IntType(8).as_pointer()

GROUPED_GRADIENT_SIZE = 16   # per-sample gradient elements from which lanes go in pairs
PREFETCH_BYTES = 4096        # how far ahead the vector loop prefetches its inputs' rows
PREFETCH_MIN_BYTES = 1 << 20  # ... in a batch of at least this many bytes of inputs

AHEAD_ROW_LINES = 16         # prefetches per row of a later batch, at most (1 KB)

LIVE = "live"   # key in `values` of the current group's lanes holding samples (<W x i1>)

# tensor ops that read each input element exactly once (so a fused input is fine)
_SINGLE_PASS = {"sum", "max", "min", "prod", "norm"}
# fused values and views one element read may pass through (see bound_fusion)
MAX_FUSED_DEPTH = 32

class FunctionCodegen(RowContractions, OuterProducts, TensorLowering, ValueEmitter):
    def __init__(self, module: ir.Module, graph: Graph, dtype: str, want_grad: bool, name: str,
                 vector_bits: int = 128):
        self.module = module
        self.graph = graph
        super().__init__(module, ir.DoubleType() if dtype == "float64" else ir.FloatType())
        self.W = max(1, vector_bits // (64 if dtype == "float64" else 32))
        self.lanes = 1            # lanes of the body being emitted: W, or 1 (scalar loop)
        self.want_grad = want_grad
        slots = abi.VALUE_AND_GRAD.slots
        fnty = ir.FunctionType(I32, [abi.ir_type(s.type, self.T) for s in slots])
        self.fn = ir.Function(module, fnty, name=name + "_impl")
        self.fn.linkage = "internal"
        self.fn.attributes.add("nounwind")
        args = {}
        for a, s in zip(self.fn.args, slots):
            a.name = s.name
            args[s.name] = a
        for n in ("params", "hypers", "value", "work", "grad"):
            args[n].add_attribute("noalias")
        self.export(name)
        (self.params, self.hypers, self.inputs, self.B, self.value, self.work, self.err,
         self.grad, self.ahead, self.ahead_rows) = (args[s.name] for s in slots)
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.fn.append_basic_block("prologue"))
        self.outer = {}           # gradient outputs accumulated as blocked outer products
        self.prefetching = None   # i1: whether this call's vector loop prefetches
        self.values: dict[int, ir.Value] = {}     # SSA scalars
        self.buffers: dict[int, ir.Value] = {}    # pointers into work
        self.work_size = 0
        self.sample = None        # i64 first sample of the current iteration
        self.input_rows: dict[int, list] = {}
        self.row_bases: dict[int, ir.Value] = {}   # input -> base pointer (tail_bases)

    def export(self, name: str) -> None:
        """The exported entry point: unpack the frame, call the worker."""
        wrapper = ir.Function(self.module, ir.FunctionType(I32, [I64.as_pointer()]), name=name)
        b = ir.IRBuilder(wrapper.append_basic_block())
        frame = wrapper.args[0]
        args = [abi.VALUE_AND_GRAD.load(b, frame, a.name, T=self.T) for a in self.fn.args]
        b.ret(b.call(self.fn, args))

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
                if not us:
                    # only an output: the accumulation computes it element by element
                    fused_ok = n.id in out_ids
                else:
                    fused_ok = (len(us) == 1 and n.id not in out_ids
                                and (OPS[us[0].op].kind == "elem" or us[0].op in _SINGLE_PASS)
                                and not (n.id not in self.vary and us[0].id in self.vary))
                if not fused_ok:
                    self.materialize.add(n.id)
        self.bound_fusion()
        self.plan_softmax(uses)
        self.plan_rows(uses, outs)

    def bound_fusion(self) -> None:
        """Reading an element of a fused value or a view computes it from its inputs'
        elements, and those from theirs (`elem` -> `compute` -> `elem` ...), down to
        values that are stored: a chain of fused nodes nests as deeply in Python calls.
        A sum of a thousand vectors is such a chain; here every node at which a chain
        would pass MAX_FUSED_DEPTH is stored in a buffer instead, so no read nests
        deeper, whatever the program. The stored node is computed by the same
        operations, so results do not change."""
        depth: dict[int, int] = {}     # fused nodes a read of the node passes through
        for n in self.live:
            kind = OPS[n.op].kind
            fused = (kind == "view" or (kind == "elem" and n.rank > 0)) \
                and n.id not in self.materialize
            below = max((depth[i.id] for i in n.inputs), default=0)
            if fused and below >= MAX_FUSED_DEPTH:
                self.materialize.add(n.id)
                fused = False
            depth[n.id] = below + 1 if fused else 0

    def plan_softmax(self, uses: dict) -> None:
        """Pair each logsumexp(z) of a vector with the softmax autodiff makes of it,
        exp(z - logsumexp(z)): lowering the logsumexp then fills the softmax's buffer
        from the exponentials it computes anyway (tensor.py lower_reduce), where the
        softmax would compute them all again."""
        self.softmax_of: dict[int, Node] = {}     # logsumexp id -> exp node
        for n in self.live:
            if n.op != "exp" or n.rank != 1:
                continue
            d = n.inputs[0]
            if d.op != "sub" or d.inputs[1].op != "broadcast" or d.inputs[1].attr("dims"):
                continue
            z, lse = d.inputs[0], d.inputs[1].inputs[0]
            if (lse.op == "logsumexp" and lse.inputs[0] is z and lse.rank == 0
                    and z.shape == n.shape and (lse.id in self.vary) == (n.id in self.vary)):
                self.softmax_of[lse.id] = n
                self.materialize.add(n.id)

    # ------------------------------------------------------------ emission

    def generate(self) -> None:
        outs = self.outputs()
        self.plan(outs)
        b = self.b
        n_grad = sum(p.size for p in self.graph.params) if self.want_grad else 0
        # prologue: zero the outputs, compute everything no input reaches
        with self.loop(n_grad) as j:
            b.store(self.fconst(0), b.gep(self.grad, [j]))
        for n in self.live:
            if n.id not in self.vary:
                self.emit_node(n)
        sample_outs = {k: v for k, v in outs.items() if k.endswith(".sample")}
        has_inputs = any(n.op == "input" for n in self.live)
        self.loss_acc = {1: self.alloca(self.T, "loss_acc")}
        b.store(self.fconst(0), self.loss_acc[1])
        if has_inputs and self.W > 1:
            VT = ir.VectorType(self.T, self.W)
            self.loss_acc[self.W] = self.alloca(VT, "loss_acc_v")
            b.store(self.splat(self.fconst(0), self.W), self.loss_acc[self.W])
            # per-lane gradient accumulators: W partial sums per gradient element
            self.grad_acc = b.bitcast(self.buffer(max(n_grad, 1) * self.W), VT.as_pointer())
            self.setup_outer_blocks(sample_outs)
            for lo, hi in self.lane_accumulated():
                with self.loop(hi, start=self.iconst(lo)) as j:
                    b.store(self.splat(self.fconst(0), self.W), b.gep(self.grad_acc, [j]),
                            align=8)
            # U groups of W lanes per iteration: each gradient element is loaded and stored
            # once per U*W samples (W and U are powers of two). The last B mod U*W
            # samples go through the same code, once more, on rows copied to a padded
            # buffer (see tail_bases): one body to compile, not a scalar copy of it too.
            U = self.groups(sample_outs)
            step = U * self.W
            self.plan_prefetch()
            pads = self.tail_pads(step)
            main = b.and_(self.B, self.iconst(-step))
            with b.if_then(b.icmp_signed("<", main, self.B)):
                for n, buf in pads.values():
                    self.fill_pad(n, buf, main, step)
            padded = b.and_(b.add(self.B, self.iconst(step - 1)), self.iconst(-step))
            with self.loop(padded, step=step) as i:
                self.row_bases = self.tail_bases(i, step, pads)
                self.body(i, self.W, sample_outs, groups=U)
            self.row_bases = {}
        elif sample_outs or has_inputs:
            with self.loop(self.B) as i:
                self.body(i, 1, sample_outs)
        if self.W > 1 and self.W in self.loss_acc:
            self.flush_outer_blocks(final=True)
            self.reduce_lanes(n_grad)
        self.epilogue(outs, self.loss_acc[1])
        b.ret(ir.Constant(I32, abi.OK))
        # allocas live in the entry block so LLVM promotes them to registers
        ir.IRBuilder(self.entry).branch(self.fn.blocks[1])

    def groups(self, sample_outs: dict) -> int:
        """Groups of lanes per iteration: 2 when the per-sample gradients added to
        per-lane accumulators are large enough for their loads and stores to dominate,
        else 1 (half the code to compile). Gradients that the row code or the outer-
        product kernels accumulate are not counted: those load and store the gradient
        once per row chunk or block, whatever the grouping. (Pairs for every small
        model were tried: logistic regression ran 5-25% faster at B=256, as the rows
        were aligned or not, but 30% slower streaming 1,000,000 samples, and took 25%
        more LLVM time.)"""
        size = sum(n.size for k, n in sample_outs.items() if k.startswith("grad.")
                   and k not in self.row_grads and k not in self.outer)
        return 2 if size >= GROUPED_GRADIENT_SIZE else 1

    def body(self, i, lanes: int, sample_outs: dict, groups: int = 1) -> None:
        """The per-sample computation for samples i .. i + groups*lanes - 1: `groups`
        copies of the per-sample code, each on its own vectors of lanes, then one
        accumulation that adds the groups' contributions."""
        base_values, base_buffers = self.values, self.buffers
        self.lanes = lanes
        self.contexts = []
        if lanes > 1:
            self.prefetch(i, groups * lanes)
        for g in range(groups):
            # per-sample values of this group; the once-per-call ones are shared
            self.values = ChainMap({}, base_values)
            self.buffers = ChainMap({}, base_buffers)
            self.sample = self.b.add(i, self.iconst(g * lanes)) if g else i
            self.input_rows = {}
            if lanes > 1:
                # which lanes hold samples (all but in the padded last iteration)
                iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
                self.values[LIVE] = self.b.icmp_signed(
                    "<", self.b.add(self.splat(self.sample, lanes), iota),
                    self.splat(self.B, lanes))
            # every group's inputs first: row pointers must dominate every use, and a
            # product with an input computes all groups at once (lower_matmul)
            for n in self.live:
                if n.op == "input":
                    self.input_row(n)
                    if lanes > 1 and n.size > 1 and n.id not in self.untransposed:
                        self.transpose_input(n)
            self.contexts.append((self.values, self.buffers, self.input_rows, self.sample))
        # Node by node, each group's copy after the other's: the groups' chains are
        # independent, and side by side in the code the out-of-order core runs them
        # together (a sample's chain of exp, log and divisions is some 200 cycles of
        # latency, more than one group's instructions fill the scheduler with).
        for n in self.live:
            for context in self.contexts:
                self.values, self.buffers, self.input_rows, self.sample = context
                # (a value already in a buffer was filled by another node's lowering:
                # a matrix product for every group, a logsumexp its softmax)
                if n.id in self.vary and n.id not in self.buffers:
                    self.emit_node(n)
        for k, node in sample_outs.items():
            if lanes > 1 and k in self.outer:
                continue
            self.accumulate(k, node)
        if lanes > 1 and self.outer:
            self.stage_outer_factors()
        self.values, self.buffers = base_values, base_buffers
        self.sample, self.lanes, self.contexts = None, 1, []

    # ---- the padded last iteration
    #
    # The vector loop runs ceil(B / step) iterations. In the last one, when B is not a
    # multiple of step, the inputs' remaining rows are first copied into a buffer of
    # step rows and the iteration reads its rows from there; the rows past B are zeros
    # (real inputs) or copies of the last row (int inputs, so that an index they hold is
    # as valid as a real sample's). Each group knows its live lanes (LIVE), and every
    # per-sample contribution to the outputs is selected to zero in the others (a
    # select, not a product: 0 * inf is NaN), so the padding never reaches a result.
    # The lanes compute a sample exactly as the full iterations do.

    def tail_pads(self, step: int) -> dict:
        """{input index: (node, buffer of `step` rows)} for the padded iteration."""
        pads = {}
        for n in self.live:
            if n.op != "input" or n.attr("index") in pads:
                continue
            ty = I64 if n.dtype == INT else self.T
            per_row = max(n.size, 1) * (8 // self.T_bytes if n.dtype == INT else 1)
            buf = self.b.bitcast(self.buffer(step * per_row), ty.as_pointer())
            pads[n.attr("index")] = (n, buf)
        return pads

    def tail_bases(self, i, step: int, pads: dict) -> dict:
        """Each input's base pointer for the iteration at sample i: the input itself,
        or in the padded iteration its buffer (filled before the loop), shifted so that
        row i is its first."""
        b = self.b
        tail = b.icmp_signed(">", b.add(i, self.iconst(step)), self.B)
        if self.outer:
            with b.if_then(tail, likely=False):
                # the staged outer-product rows so far are contiguous in the input: add
                # them before this iteration stages rows of the buffer
                self.flush_outer_blocks(final=True)
        bases = {}
        for k, (n, buf) in pads.items():
            size = self.iconst(max(n.size, 1))
            real = b.bitcast(b.load(b.gep(self.inputs, [self.iconst(k)])), buf.type)
            shifted = b.gep(buf, [b.neg(b.mul(i, size))])
            bases[k] = b.select(tail, shifted, real)
        return bases

    def fill_pad(self, n: Node, buf, i, step: int) -> None:
        """buf <- rows i..B-1 of input n, then padding up to `step` rows."""
        b = self.b
        size = max(n.size, 1)
        elem = 8 if n.dtype == INT else self.T_bytes
        src = b.load(b.gep(self.inputs, [self.iconst(n.attr("index"))]))
        dst = b.bitcast(buf, I8P)
        live = b.mul(b.sub(self.B, i), self.iconst(size * elem))      # bytes
        # (library calls: loops here cost as much LLVM time as a tenth of the body)
        memcpy = declared(self.module, "llvm.memcpy.p0.p0.i64", ir.VoidType(),
                          [I8P, I8P, I64, I1])
        b.call(memcpy, [dst, b.gep(src, [b.mul(i, self.iconst(size * elem))]), live,
                        ir.Constant(I1, 0)])
        rest = b.sub(self.iconst(step * size * elem), live)
        if n.dtype != INT:
            memset = declared(self.module, "llvm.memset.p0.i64", ir.VoidType(),
                              [I8P, ir.IntType(8), I64, I1])
            b.call(memset, [b.gep(dst, [live]), ir.Constant(ir.IntType(8), 0), rest,
                            ir.Constant(I1, 0)])
            return
        last = b.gep(src, [b.mul(b.sub(self.B, self.iconst(1)), self.iconst(size * elem))])
        with self.loop(b.sdiv(rest, self.iconst(size * elem))) as r:
            at = b.gep(dst, [b.add(live, b.mul(r, self.iconst(size * elem)))])
            b.call(memcpy, [at, last, self.iconst(size * elem), ir.Constant(I1, 0)])

    def live_only(self, v):
        """v (the current group's per-sample value) with its padding lanes zeroed."""
        live = self.values.get(LIVE) if self.lanes > 1 else None
        if live is None:
            return v
        if not is_vector(v):
            v = self.splat(v, self.lanes)
        return self.b.select(live, v, self.splat(self.fconst(0), self.lanes))

    def prefetch(self, i, count: int) -> None:
        """This iteration's prefetches: in a large batch its own inputs' rows ahead
        (prefetch_inputs), else a later batch of the caller's, if it gave one
        (prefetch_ahead); the choice is one branch, as predictable as the loop's."""
        if self.prefetching is None:
            self.prefetch_ahead(i, count)
            return
        with self.b.if_else(self.prefetching) as (streaming, otherwise):
            with streaming:
                self.prefetch_inputs(i, count)
            with otherwise:
                self.prefetch_ahead(i, count)

    def prefetch_inputs(self, i, count: int) -> None:
        """Ask for the input rows of the samples PREFETCH_BYTES of each input ahead of
        this iteration's `count` samples, one prefetch per cache line. A large batch
        streams from memory, and without this the loads of an iteration wait for
        memory and its arithmetic waits for the loads: with it the two overlap (W2 at
        B=1,000,000: from 6.7 to 10.3 GB/s, at the machine's read bandwidth). A
        prefetch never faults, so reading past the end of an input is harmless.
        An input whose rows take more than PREFETCH_BYTES an iteration is left to the
        hardware prefetcher: its loads are long sequential runs, the lines 4 KB ahead
        are this iteration's own, and a prefetch per line would be code to compile
        for each (hence at most PREFETCH_BYTES / 64 of them per input)."""
        b = self.b
        for n in self.live:
            if n.op != "input":
                continue
            row_bytes = self.row_bytes(n)
            if row_bytes * count > PREFETCH_BYTES:
                continue
            base = b.load(b.gep(self.inputs, [self.iconst(n.attr("index"))]))
            ahead = b.gep(base, [b.add(b.mul(i, self.iconst(row_bytes)),
                                       self.iconst(PREFETCH_BYTES))])
            # (keep in every cache level)
            self.prefetch_lines(ahead, -(-row_bytes * count // 64), locality=3)

    def prefetch_ahead(self, i, count: int) -> None:
        """A batch the caller gathers later (the fused training steps, codegen/fused.py:
        the one AHEAD_BATCHES on): this iteration's share of its rows, into L2.
        The frame's `ahead` lists their addresses, input by input, `ahead_rows` rows per
        input (0: none, every other caller); iteration i takes rows i*rows/B up to
        (i + count)*rows/B.

        Why: the steps gather each batch's rows into contiguous buffers before calling
        the gradient. From a data set larger than L2 a gather waits on memory, some 16
        lines at a time (the core's line fill buffers), with nothing else to do; the
        gradient then computes with the memory idle. Asked for here, a few rows per
        iteration, a later batch's lines arrive while this one computes, and its gather
        copies from L2 (W5, 16,384 rows of 256 bytes: the native steps 10-15% faster).
        Asked for all at once, before the call, they fill the fill buffers and the
        gradient's own loads wait behind them (slower than no prefetch). One prefetch
        per 64 bytes from the row's start, at most AHEAD_ROW_LINES: a row starting
        inside a line leaves its last line to the gather."""
        b = self.b
        rows, ahead = self.ahead_rows, self.ahead
        with b.if_then(b.icmp_signed(">", rows, self.iconst(0)), likely=False):
            lo = b.sdiv(b.mul(i, rows), self.B)
            hi = b.sdiv(b.mul(b.add(i, self.iconst(count)), rows), self.B)
            hi = b.select(b.icmp_signed("<", hi, rows), hi, rows)
            inputs = [n for n in self.live if n.op == "input"]
            with self.loop(hi, start=lo) as t:
                for n in inputs:
                    at = b.add(b.mul(self.iconst(n.attr("index")), rows), t)
                    row = b.inttoptr(b.load(b.gep(ahead, [at])), I8P)
                    # (into L2)
                    self.prefetch_lines(row, min(-(-self.row_bytes(n) // 64),
                                                 AHEAD_ROW_LINES), locality=2)

    def prefetch_lines(self, start, lines: int, locality: int) -> None:
        """Prefetches (for reading, of data) of `lines` cache lines from `start` (an i8*)
        on; locality as llvm.prefetch has it: 3 keeps the lines in every cache level, 2
        in L2 and beyond."""
        b = self.b
        fn = declared(self.module, "llvm.prefetch.p0", ir.VoidType(), [I8P, I32, I32, I32])
        for line in range(lines):
            b.call(fn, [b.gep(start, [self.iconst(64 * line)]), ir.Constant(I32, 0),
                        ir.Constant(I32, locality), ir.Constant(I32, 1)])

    def plan_prefetch(self) -> None:
        """Whether this call's vector loop prefetches (an i1, computed once per call), or
        None when it never does. A batch of less than PREFETCH_MIN_BYTES of inputs sits
        in the caches after its first use (a mini-batch, an optimizer's repeated calls),
        and there the prefetches are only instructions: 33 of them an iteration for
        logistic regression, about a sixth of its loop."""
        self.prefetching = None
        row_bytes = sum(self.row_bytes(n) for n in self.live if n.op == "input")
        if PREFETCH_BYTES and row_bytes:
            self.prefetching = self.b.icmp_signed(
                ">=", self.B, self.iconst(-(-PREFETCH_MIN_BYTES // row_bytes)))

    def row_bytes(self, n: Node) -> int:
        """The bytes of one sample of input n."""
        return max(n.size, 1) * (8 if n.dtype == INT else self.T_bytes)

    def group_elem(self, n: Node, idx: tuple):
        """n's element summed over the groups of the current iteration."""
        vals = []
        for self.values, self.buffers, self.input_rows, self.sample in self.contexts:
            vals.append(self.live_only(self.elem(n, idx)))
        return self.tree(vals, self.fadd)

    def reduce_lanes(self, n_grad: int) -> None:
        """Add the per-lane partial sums into the scalar accumulators, lane by lane
        (a fixed order: results are deterministic for a given B)."""
        b = self.b
        acc = self.loss_acc[1]
        b.store(b.fadd(b.load(acc), self.hsum(b.load(self.loss_acc[self.W]))), acc)
        if not self.want_grad or not n_grad:
            return
        for lo, hi in self.lane_accumulated():
            with self.loop(hi, start=self.iconst(lo)) as j:
                p = b.gep(self.grad, [j])
                v = b.load(b.gep(self.grad_acc, [j]), align=8)
                b.store(b.fadd(b.load(p), self.hsum(v)), p)

    def lane_accumulated(self) -> list[tuple[int, int]]:
        """The ranges of gradient elements with per-lane accumulators: all but those of
        parameters whose gradient goes straight into `grad` (codegen/rows.py)."""
        direct = {self.param_spec(k).name for k in self.row_grads} | self.row_outer_params()
        ranges = []
        for p in self.graph.params if self.want_grad else ():
            if p.name in direct or not p.size:
                continue
            if ranges and ranges[-1][1] == p.offset:
                ranges[-1] = (ranges[-1][0], p.offset + p.size)
            else:
                ranges.append((p.offset, p.offset + p.size))
        return ranges

    def hsum(self, v):
        b = self.b
        total = b.extract_element(v, self.iconst(0))
        for l in range(1, v.type.count):
            total = b.fadd(total, b.extract_element(v, self.iconst(l)))
        return total

    def emit_node(self, n: Node) -> None:
        if n.id in self.row_dots:
            self.values[n.id] = self.row_dot(n)
            return
        if n.id in self.row_matvecs:
            self.buffers[n.id] = self.node_buffer(n)
            self.row_matvec(n)
            return
        d = OPS[n.op]
        if n.id in self.materialize:
            self.buffers[n.id] = self.node_buffer(n)
            if d.kind == "tensor":
                d.lower(self, n)
            else:
                with self.loops(n.shape) as idx:
                    self.store(n, idx, self.compute(n, idx))
        elif d.kind == "elem" and n.rank == 0:
            self.values[n.id] = self.compute(n, ())
        elif d.kind == "leaf" and n.op == "const":
            self.values[n.id] = self.fconst(n.attr("value"))

    def vector_node(self, n: Node) -> bool:
        """Whether n's elements are <W x T> vectors in the body being emitted."""
        return self.lanes > 1 and n.id in self.vary

    def elem_type(self, n: Node):
        base = {BOOL: I1, INT: I64}.get(n.dtype, self.T)
        return ir.VectorType(base, self.lanes) if self.vector_node(n) else base

    def node_buffer(self, n: Node):
        """Space in `work` for n's elements (vectors of lanes for per-sample values)."""
        if self.vector_node(n):
            ptr = self.buffer(n.size * self.lanes)
            return self.b.bitcast(ptr, ir.VectorType(self.T, self.lanes).as_pointer())
        return self.buffer(n.size)

    def compute(self, n: Node, idx: tuple) -> ir.Value:
        """The element of n at idx, from its op's lowering rule."""
        d = OPS[n.op]
        if d.kind == "elem":
            return d.lower(self, n, *[self.elem(i, idx) for i in n.inputs])
        return d.lower(self, n, idx)

    def elem(self, n: Node, idx: tuple) -> ir.Value:
        if any(is_vector(i) for i in idx):
            return self.gather(n, idx)
        if n.id in self.values:
            return self.values[n.id]
        if n.id in self.buffers:
            v = self.b.load(self.b.gep(self.buffers[n.id], [self.flat(n.shape, idx)]), align=8)
            # buffers hold reals; a bool tensor is kept as 0.0/1.0
            return self.fcmp("!=", v, self.fconst(0)) if n.dtype == BOOL else v
        if n.op == "param":
            off = self.b.add(self.iconst(n.attr("offset")), self.flat(n.shape, idx))
            return self.b.load(self.b.gep(self.params, [off]))
        if n.op == "hyper":
            return self.b.load(self.b.gep(self.hypers, [self.iconst(n.attr("index"))]))
        if n.op == "input":
            return self.load_input(n, idx)
        return self.compute(n, idx)

    def gather(self, n: Node, idx: tuple) -> ir.Value:
        """n at an index that differs between lanes (a data-dependent index): lane by
        lane. Each lane reads its own sample's element."""
        b = self.b
        width = next(i.type.count for i in idx if is_vector(i))
        lanes = []
        for lane in range(width):
            li = tuple(b.extract_element(i, self.iconst(lane)) if is_vector(i) else i
                       for i in idx)
            v = self.elem(n, li)
            lanes.append(b.extract_element(v, self.iconst(lane)) if is_vector(v) else v)
        return self.vector_of(lanes)

    def transpose_input(self, n: Node) -> None:
        """Load W samples' rows of a tensor input into a buffer of lane vectors, element
        j holding (x[i][j], x[i+1][j], ...): W x W blocks are loaded as W row vectors and
        transposed with shuffles; the last size mod W elements are gathered.

        The transpose swaps the bits of the row and column indices one bit at a time:
        stage g (1, 2, 4, ...) exchanges the elements whose row and column differ in
        bit g between rows p and p + g. Each stage's masks are what the vector units do
        cheaply: g = 1 interleaves within 128-bit lanes (unpcklpd/unpckhpd), g = 2 and
        4 move whole 128- and 256-bit blocks (vperm2f128, vshuff64x2). A network of
        lane-crossing interleaves costs two to three times as many instructions."""
        b, W = self.b, self.lanes
        VT = ir.VectorType(self.T, W)
        buf = b.bitcast(self.buffer(n.size * W), VT.as_pointer())
        rows = self.input_rows[n.attr("index")]
        stages = []
        g = 1
        while g < W:
            low = [k if not k & g else W + k - g for k in range(W)]
            high = [k + g if not k & g else W + k for k in range(W)]
            stages.append((g, ir.Constant(ir.VectorType(I32, W), low),
                           ir.Constant(ir.VectorType(I32, W), high)))
            g *= 2
        with self.loop(n.size // W) as jb:
            start = b.mul(jb, self.iconst(W))
            vecs = [b.load(b.bitcast(b.gep(r, [start]), VT.as_pointer()), align=self.T_bytes)
                    for r in rows]
            for g, low, high in stages:
                for p in range(W):
                    if not p & g:
                        q = p + g
                        vecs[p], vecs[q] = (b.shuffle_vector(vecs[p], vecs[q], low),
                                            b.shuffle_vector(vecs[p], vecs[q], high))
            for k, v in enumerate(vecs):
                b.store(v, b.gep(buf, [b.add(start, self.iconst(k))]), align=8)
        for j in range(n.size - n.size % W, n.size):
            out = self.vector_of([b.load(b.gep(r, [self.iconst(j)])) for r in rows])
            b.store(out, b.gep(buf, [self.iconst(j)]), align=8)
        self.buffers[n.id] = buf

    def load_input(self, n: Node, idx: tuple) -> ir.Value:
        b = self.b
        rows = self.input_rows[n.attr("index")]
        off = self.flat(n.shape, idx)
        if len(rows) == 1:
            return b.load(b.gep(rows[0], [off]))
        if n.size == 1:   # a scalar input: the lanes' values are contiguous
            vt = ir.VectorType(rows[0].type.pointee, len(rows))
            return b.load(b.bitcast(rows[0], vt.as_pointer()),
                          align=8 if rows[0].type.pointee == I64 else self.T_bytes)
        return self.vector_of([b.load(b.gep(row, [off])) for row in rows])

    def store(self, n: Node, idx: tuple, v: ir.Value) -> None:
        if n.dtype == BOOL:
            v = self.select(v, self.fconst(1), self.fconst(0))
        if self.vector_node(n):
            v = self.splat(v, self.lanes)
        self.b.store(v, self.b.gep(self.buffers[n.id], [self.flat(n.shape, idx)]), align=8)

    def input_row(self, n: Node) -> list:
        """Pointers to this iteration's rows of an input, one per lane (computed once
        per iteration)."""
        k = n.attr("index")
        if k not in self.input_rows:
            b = self.b
            ty = I64 if n.dtype == INT else self.T
            base = self.row_bases.get(k) or b.bitcast(b.load(b.gep(self.inputs,
                                                                   [self.iconst(k)])),
                                                      ty.as_pointer())
            size = self.iconst(max(n.size, 1))
            rows = []
            for lane in range(self.lanes):
                sample = b.add(self.sample, self.iconst(lane)) if lane else self.sample
                rows.append(b.gep(base, [b.mul(sample, size)]))
            self.input_rows[k] = rows
        return self.input_rows[k]

    def accumulate(self, key: str, node: Node) -> None:
        if key in self.row_grads:
            return self.accumulate_rows(key, node)
        b = self.b
        if key.startswith("loss"):
            acc = self.loss_acc[self.lanes]
            b.store(self.fadd(b.load(acc), self.group_elem(node, ()), flags=FAST), acc)
            return
        spec = self.param_spec(key)
        with self.loops(node.shape) as idx:
            j = self.flat(node.shape, idx)
            if self.lanes > 1:
                p = b.gep(self.grad_acc, [b.add(self.iconst(spec.offset), j)])
                v = self.splat(self.group_elem(node, idx), self.lanes)
                b.store(b.fadd(b.load(p, align=8), v, flags=FAST), p, align=8)
            else:
                p = b.gep(self.grad, [b.add(self.iconst(spec.offset), j)])
                b.store(b.fadd(b.load(p), self.group_elem(node, idx), flags=FAST), p)

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
        b.store(loss, self.value)
        if not self.want_grad:
            return
        for spec in self.graph.params:
            once = outs.get(f"grad.{spec.name}.once")
            with self.loops(spec.shape) as idx:
                p = b.gep(self.grad, [b.add(self.iconst(spec.offset),
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
        """Space for `size` elements in `work`, starting on a 64-byte boundary (the
        runtime aligns `work` itself): a vector load that straddles two cache lines
        costs twice as much."""
        per_line = 64 // (8 if isinstance(self.T, ir.DoubleType) else 4)
        off = -(-self.work_size // per_line) * per_line
        self.work_size = off + max(size, 1)
        return self.b.gep(self.work, [self.iconst(off)])

    @contextmanager
    def loop(self, n, start=None, step: int = 1):
        """for i in range(start, n, step): the body is whatever the with-block emits."""
        count = self.iconst(n) if isinstance(n, int) else n
        start = self.iconst(0) if start is None else start
        with counted_loop(self.b, self.fn, start, count, step) as i:
            yield i

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

    def check_index(self, n: Node, i):
        """Return i, after branching out with an error if it is outside 0..size-1, or
        if the arithmetic computing it overflowed 64 bits (in any lane). err gets
        (check id, sample, value), the id as -1 - id for an overflow."""
        b = self.b
        size = self.iconst(n.attr("size"))
        bad = b.icmp_unsigned(">=", i, self.splat(size, i.type.count) if is_vector(i) else size)
        overflow = self.index_overflow(n.inputs[0])
        if overflow is not None:
            bad = self.or_(bad, overflow)
        any_bad = bad
        if is_vector(bad):
            any_bad = b.icmp_unsigned("!=", b.bitcast(bad, ir.IntType(bad.type.count)),
                                      ir.Constant(ir.IntType(bad.type.count), 0))
        with b.if_then(any_bad, likely=False):
            lanes = bad.type.count if is_vector(bad) else 1
            for lane in range(lanes):
                k = self.iconst(lane)
                lane_bad = b.extract_element(bad, k) if lanes > 1 else bad
                with b.if_then(lane_bad):
                    value = b.extract_element(i, k) if lanes > 1 else i
                    sample = (b.add(self.sample, k) if self.sample is not None
                              else self.iconst(-1))
                    check = self.iconst(n.attr("check"))
                    if overflow is not None:
                        lane_over = (b.extract_element(overflow, k) if is_vector(overflow)
                                     else overflow)
                        check = b.select(lane_over, self.iconst(-1 - n.attr("check")), check)
                    for slot, v in (("check", check), ("sample", sample), ("value", value)):
                        abi.ERROR.store(b, self.err, slot, v)
                    b.ret(ir.Constant(I32, abi.INDEX_ERROR))
            b.ret(ir.Constant(I32, abi.INDEX_ERROR))
        return i

    def index_overflow(self, i: Node):
        """Whether any step of the integer arithmetic computing i overflowed 64 bits:
        an i1 (a vector of them across lanes), or None for an index without arithmetic.
        The arithmetic itself wraps (the op table's lowerings); here each step is done
        again by LLVM's overflow-reporting intrinsic, which LLVM merges with it.
        (Iterative: the expression may be long.)"""
        flags: dict[int, ir.Value] = {}
        stack = [i]
        while stack:
            n = stack[-1]
            if n.id in flags or n.op not in _OVERFLOW_INTRINSIC:
                stack.pop()
                continue
            todo = [x for x in n.inputs if x.op in _OVERFLOW_INTRINSIC and x.id not in flags]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            operands = [self.elem(x, ()) for x in n.inputs]
            if n.op == "ineg":              # -x overflows as 0 - x does
                operands.insert(0, self.iconst(0))
            x, y = self.unify(*operands)
            name = f"llvm.{_OVERFLOW_INTRINSIC[n.op]}.with.overflow"
            fn = declared(self.module, f"{name}.{_type_suffix(x.type)}",
                          ir.LiteralStructType([x.type, _flag_type(x.type)]), [x.type, x.type])
            over = self.b.extract_value(self.b.call(fn, [x, y]), 1)
            for f in (flags[x.id] for x in n.inputs if x.id in flags):
                over = self.or_(over, f)
            flags[n.id] = over
        return flags.get(i.id)


# the overflow-reporting LLVM intrinsic of each integer op (llvm.<name>.with.overflow)
_OVERFLOW_INTRINSIC = {"iadd": "sadd", "isub": "ssub", "imul": "smul", "ineg": "ssub"}


def _type_suffix(ty) -> str:
    """An integer type's name in an intrinsic's: i64, v8i64."""
    return f"v{ty.count}i64" if isinstance(ty, ir.VectorType) else "i64"


def _flag_type(ty):
    return ir.VectorType(I1, ty.count) if isinstance(ty, ir.VectorType) else I1
