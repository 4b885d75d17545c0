"""Graph -> LLVM IR (through llvmlite.ir): a model function's plan, its loops, the
accumulation of its outputs and its epilogue. docs/codegen.md tells the whole story.

A model's gradient and its objective are two exported functions of one signature
(each in a code unit of its own, see codegen/units.py),

    i32 lossc_value_and_grad(i64* frame)        i32 lossc_loss(i64* frame)

where `frame` holds the arguments of the function that does the work, one slot each,
as codegen/abi.py declares them (VALUE_AND_GRAD: the parameters, hyperparameters,
inputs, batch size, value, scratch space, error record, gradient, and a later batch's
rows to prefetch); the worker's parameters are those slots, by name. `work` is
scratch space of `work_size` elements for tensor values. The return value is OK, or
INDEX_ERROR when a data-dependent index was out of range: `err` then holds where
(codegen/index.py, abi.ERROR).

The body is: a prologue computing every value that no input reaches (once per call),
a loop over the B samples computing the per-sample values and accumulating the
".sample" outputs, and an epilogue combining them with the ".once" outputs (see
passes/hoist.py).

SIMD across the batch: the loop takes W samples at a time (W = vector width / element
size: 8 doubles with AVX-512) and every per-sample value is a <W x T> vector whose
lanes are W samples, so even a model whose per-sample work is a handful of scalars runs
on full vectors; with large gradients two lane groups (codegen/lanes.py) go per
iteration (`lane_groups`), their code interleaved node by node. The last B mod
(groups x W) samples take one more iteration of the same code, on rows copied to a
padded buffer, with the padding lanes' contributions selected away (`tail_bases`).
Per-lane gradient accumulators are summed across lanes once, at the end. Values
computed once per call stay scalars and are splatted where they meet per-sample vectors
(`unify`). Without SIMD (W = 1) or without inputs, the loop is scalar.

How a node's elements are produced (codegen/emitter.py `elem`, codegen/plan.py):
  - rank-0 values of elementwise ops are SSA values, computed once, in order;
  - tensor ops (reductions, matmul, softmax) fill a buffer in `work` with loops;
  - elementwise tensors used once by an elementwise consumer or a single-pass
    reduction are fused: computed on demand inside the consumer's loop (a chain of
    them longer than MAX_FUSED_DEPTH is stored in pieces);
  - views (broadcast, transpose, take, slice, ...) map the index, no copy;
  - leaves load from the arguments.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import abi, prefetch
from lossc.codegen.emitter import GraphEmitter
from lossc.codegen.lanes import LaneGroup
from lossc.codegen.outer import OuterBlocks
from lossc.codegen.plan import plan
from lossc.codegen.sparse import RowSparse
from lossc.codegen.transpose import gather_rows, transpose_input, transposed
from lossc.codegen.values import FAST, I8P, I32, I64, is_vector
from lossc.ir.graph import INT, Graph, Node
from lossc.ir.ops import OPS
from lossc.passes.lower import Target


GROUPED_GRADIENT_SIZE = 16   # per-sample gradient elements from which lanes go in pairs

def scatter_terms(node: Node) -> list:
    """The scatters (gathers' gradients) a per-sample gradient is the sum of, or []
    when it is anything else."""
    terms, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.op == "add":
            stack.extend(n.inputs)
        elif n.op == "scatter":
            terms.append(n)
        else:
            return []
    return terms


def model_function(module: ir.Module, T, name: str):
    """The worker function `name`_impl of the frame's slots (abi.VALUE_AND_GRAD), its
    parameters named as the slots, exported as `name` (`export`); returns it, its entry
    block (for variables) and a builder in its first block of code."""
    slots = abi.VALUE_AND_GRAD.slots
    fnty = ir.FunctionType(I32, [abi.ir_type(s.type, T) for s in slots])
    fn = ir.Function(module, fnty, name=name + "_impl")
    fn.linkage = "internal"
    for a, s in zip(fn.args, slots):
        a.name = s.name
    export(module, fn, name, T)
    fn.attributes.add("nounwind")
    for a in fn.args:
        if a.name in ("params", "hypers", "value", "work", "grad"):
            a.add_attribute("noalias")
    entry = fn.append_basic_block("entry")
    return fn, entry, ir.IRBuilder(fn.append_basic_block("prologue"))


def export(module: ir.Module, fn: ir.Function, name: str, T) -> None:
    """The exported entry point: unpack the frame, slot by slot, call the worker."""
    wrapper = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer()]), name=name)
    b = ir.IRBuilder(wrapper.append_basic_block())
    frame = wrapper.args[0]
    args = [abi.VALUE_AND_GRAD.load(b, frame, a.name, T=T) for a in fn.args]
    b.ret(b.call(fn, args))


def function_outputs(graph: Graph, want_grad: bool) -> dict[str, Node]:
    """The outputs a model function computes: the loss's, and the gradient's with
    want_grad."""
    keep = {}
    for k, v in graph.outputs.items():
        base = k.rsplit(".", 1)[0]
        if base == "loss" or (want_grad and base.startswith("grad.")):
            keep[k] = v
    return keep


class FunctionCodegen:
    """One model function (the gradient, or the objective alone) of a graph that has
    been through the pass pipeline: `generate()` emits it, `work_size` is then the
    scratch space it needs."""

    def __init__(self, module: ir.Module, graph: Graph, dtype: str, want_grad: bool,
                 name: str, vector_bits: int = 128):
        T = ir.DoubleType() if dtype == "float64" else ir.FloatType()
        W = Target.of(dtype, vector_bits).lanes
        fn, entry, builder = model_function(module, T, name)
        self.em = GraphEmitter(module, graph, T, W, fn, entry, builder)
        self.graph = graph
        self.want_grad = want_grad
        self.once = LaneGroup.once()      # the values computed once per call
        self.outer = OuterBlocks()        # outer-product gradients (the vector loop)
        self.by_row_kernel = set()        # parameters whose gradient the row kernel writes
        self.rows = RowSparse(self.em, graph.params if want_grad else (), {})

    @property
    def work_size(self) -> int:
        return self.em.work_size

    def outputs(self) -> dict[str, Node]:
        return function_outputs(self.graph, self.want_grad)

    # ------------------------------------------------------------ the function

    def generate(self) -> None:
        em, b = self.em, self.em.b
        outs = self.outputs()
        self.plan = plan(self.graph, outs)
        n_grad = sum(p.size for p in self.graph.params) if self.want_grad else 0
        sample_outs = self.sample_outputs(outs)
        has_inputs = any(n.op == "input" for n in self.plan.live)
        self.by_row_kernel = {self.param_spec(k).name for k, n in sample_outs.items()
                              if n.op == "outer_grad" and OuterBlocks.by_rows(n)
                              and has_inputs and em.W > 1}
        # prologue: zero the outputs (a row-sparse parameter's are its touched rows,
        # codegen/sparse.py; the row kernel's, it writes whole), compute everything no
        # input reaches
        self.rows = RowSparse(em, self.graph.params if self.want_grad else (), outs)
        for lo, hi in self.dense_ranges(self.by_row_kernel):
            em.fill(em.grad, lo, hi, em.W, em.fconst(0))
        self.rows.prologue()
        for n in self.plan.live:
            if n.id not in self.plan.vary:
                self.emit_node(self.once, n)
        # the loss is summed over the batch in double precision whatever T: a float32
        # sum over 1e6 samples would keep three or four digits
        self.loss_acc = {1: em.alloca(ir.DoubleType(), "loss_acc")}
        b.store(ir.Constant(ir.DoubleType(), 0.0), self.loss_acc[1])
        if has_inputs and em.W > 1:
            self.vector_loop(sample_outs, n_grad)
        elif sample_outs or has_inputs:
            with em.loop(em.B) as i:
                self.body(i, 1, sample_outs)
        if em.W > 1 and em.W in self.loss_acc:
            self.outer.flush(em, final=True, scale=self.objective_scale()[0])
            self.reduce_lanes(n_grad)
        self.epilogue(outs, self.loss_acc[1])
        b.ret(ir.Constant(I32, abi.OK))
        # allocas live in the entry block so LLVM promotes them to registers
        ir.IRBuilder(em.entry).branch(em.fn.blocks[1])

    def sample_outputs(self, outs: dict) -> dict:
        """The outputs computed per sample (accumulated by `accumulate`)."""
        return {k: v for k, v in outs.items() if k.endswith(".sample")}

    def vector_loop(self, sample_outs: dict, n_grad: int) -> None:
        """The loop over the batch U groups of W lanes at a time: each gradient element
        is loaded and stored once per U*W samples (W and U are powers of two). The last
        B mod U*W samples go through the same code, once more, on rows copied to a
        padded buffer (see tail_bases): one body to compile, not a scalar copy of it
        too."""
        em, b = self.em, self.em.b
        VT = ir.VectorType(em.T, em.W)
        wide = ir.VectorType(ir.DoubleType(), em.W)
        self.loss_acc[em.W] = em.alloca(wide, "loss_acc_v")
        b.store(ir.Constant(wide, [0.0] * em.W), self.loss_acc[em.W])
        # per-lane gradient accumulators: W partial sums per gradient element of the
        # parameters that are not row-sparse (a table's rows go to their slots, and
        # accumulators for all of it would reserve W times the table)
        self.acc_offsets = self.accumulator_offsets()
        n_acc = sum(p.size for p in self.graph.params if p.name in self.acc_offsets)
        self.grad_acc = b.bitcast(em.buffer(max(n_acc, 1) * em.W), VT.as_pointer())
        self.outer = OuterBlocks.setup(
            em, sample_outs, self.grad_acc, lambda key: self.param_spec(key).offset,
            lambda key: self.acc_offsets[self.param_spec(key).name])
        for lo, hi in self.lane_accumulated():
            with em.loop(hi, start=em.iconst(lo)) as j:
                b.store(em.splat(em.fconst(0), em.W), self.accumulator_at(lo, j), align=8)
        U = self.lane_groups(sample_outs)
        step = U * em.W
        inputs = [n for n in self.plan.live if n.op == "input"]
        self.stream = prefetch.streaming(em, inputs)
        pads = self.tail_pads(step)
        main = b.and_(em.B, em.iconst(-step))
        with b.if_then(b.icmp_signed("<", main, em.B)):
            for n, buf in pads.values():
                self.fill_pad(n, buf, main, step)
        padded = b.and_(b.add(em.B, em.iconst(step - 1)), em.iconst(-step))
        with em.loop(padded, step=step) as i:
            em.row_bases = self.tail_bases(i, step, pads)
            self.body(i, em.W, sample_outs, groups=U)
        em.row_bases = {}

    def lane_groups(self, sample_outs: dict) -> int:
        """Groups of lanes per iteration: 2 when the per-sample gradients added to
        per-lane accumulators are large enough for their loads and stores to dominate,
        else 1 (half the code to compile; docs/codegen.md has the measurements).
        Gradients that the row code or the outer-product kernels accumulate are not
        counted: those load and store the gradient once per row chunk or block,
        whatever the grouping."""
        size = sum(n.size for k, n in sample_outs.items() if k.startswith("grad.")
                   and k not in self.outer and n.op != "row_scatter")
        return 2 if size >= GROUPED_GRADIENT_SIZE else 1

    def body(self, i, lanes: int, sample_outs: dict, groups: int = 1) -> None:
        """The per-sample computation for samples i .. i + groups*lanes - 1: `groups`
        copies of the per-sample code, each on its own vectors of lanes, then one
        accumulation that adds the groups' contributions."""
        em, b = self.em, self.em.b
        iteration = []
        if lanes > 1:
            inputs = [n for n in self.plan.live if n.op == "input"]
            prefetch.prefetch(em, inputs, self.stream, i, groups * lanes)
            self.rows.prefetch(i, groups * lanes)
        for k in range(groups):
            g = self.once.per_sample(lanes, b.add(i, em.iconst(k * lanes)) if k else i,
                                     iteration)
            if lanes > 1:
                # which lanes hold samples (all but in the padded last iteration)
                iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
                g.live = b.icmp_signed("<", b.add(em.splat(g.sample, lanes), iota),
                                       em.splat(em.B, lanes))
            # every group's inputs first: row pointers must dominate every use, and a
            # product with an input computes all groups at once (codegen/matmul.py)
            for n in self.plan.live:
                if n.op == "input":
                    em.input_row(g, n)
                    # (an int vector is read element by element, for its indices)
                    if (lanes > 1 and n.size > 1 and n.dtype != INT
                            and n.id not in self.plan.untransposed):
                        transpose_input(em, g, n)
        # Node by node, each group's copy after the other's: the groups' chains are
        # independent, and side by side in the code the out-of-order core runs them
        # together (a sample's chain of exp, log and divisions has more latency than
        # one group's instructions fill the scheduler with).
        for n in self.plan.live:
            for g in iteration:
                # (a value already in a buffer was filled by another node's lowering:
                # a matrix product for every group, a logsumexp its softmax)
                if n.id in self.plan.vary and n.id not in g.buffers:
                    self.emit_node(g, n)
        for key, node in sample_outs.items():
            if lanes > 1 and key in self.outer:
                continue
            self.accumulate(iteration, key, node)
        if lanes > 1:
            self.outer.stage(em, iteration)

    def emit_node(self, g: LaneGroup, n: Node) -> None:
        """Compute n for group g where its plan says: into an SSA value, into a buffer,
        or (a fused value, a view) nowhere until it is read."""
        em = self.em
        d = OPS[n.op]
        if d.kind == "tensor":
            # (it fills its buffer; a row dot returns its value instead)
            value = d.lower(em, g, n)
            if value is not None:
                g.values[n.id] = value
        elif n.id in self.plan.row_gathers and g.lanes >= 2 and n.size >= g.lanes:
            gather_rows(em, g, n)
        elif n.id in self.plan.materialize:
            em.result_buffer(g, n)
            with em.loops(n.shape) as idx:
                em.store(g, n, idx, em.compute(g, n, idx))
        elif d.kind == "elem" and n.rank == 0:
            g.values[n.id] = em.compute(g, n, ())
        elif d.kind == "leaf" and n.op == "const":
            g.values[n.id] = em.fconst(n.attr("value"))

    # ------------------------------------------------------------ the padded last iteration
    #
    # The vector loop runs ceil(B / step) iterations. In the last one, when B is not a
    # multiple of step, the inputs' remaining rows are first copied into a buffer of
    # step rows and the iteration reads its rows from there; the rows past B are zeros
    # (real inputs) or copies of the last row (int inputs, so that an index they hold is
    # as valid as a real sample's). Each group knows its live lanes, and every
    # per-sample contribution to the outputs is selected to zero in the others (a
    # select, not a product: 0 * inf is NaN), so the padding never reaches a result.
    # The lanes compute a sample exactly as the full iterations do.

    def tail_pads(self, step: int) -> dict:
        """{input index: (node, buffer of `step` rows)} for the padded iteration."""
        em = self.em
        pads = {}
        for n in self.plan.live:
            if n.op != "input" or n.attr("index") in pads:
                continue
            ty = I64 if n.dtype == INT else em.T
            per_row = max(n.size, 1) * (8 // em.T_bytes if n.dtype == INT else 1)
            buf = em.b.bitcast(em.buffer(step * per_row), ty.as_pointer())
            pads[n.attr("index")] = (n, buf)
        return pads

    def tail_bases(self, i, step: int, pads: dict) -> dict:
        """Each input's base pointer for the iteration at sample i: the input itself,
        or in the padded iteration its buffer (filled before the loop), shifted so that
        row i is its first."""
        em, b = self.em, self.em.b
        tail = b.icmp_signed(">", b.add(i, em.iconst(step)), em.B)
        if self.outer.entries:
            with b.if_then(tail, likely=False):
                # the staged outer-product rows so far are contiguous in the input: add
                # them before this iteration stages rows of the buffer
                self.outer.flush(em, final=True)
        bases = {}
        for k, (n, buf) in pads.items():
            size = em.iconst(max(n.size, 1))
            real = b.bitcast(b.load(b.gep(em.inputs, [em.iconst(k)])), buf.type)
            shifted = b.gep(buf, [b.neg(b.mul(i, size))])
            bases[k] = b.select(tail, shifted, real)
        return bases

    def fill_pad(self, n: Node, buf, i, step: int) -> None:
        """buf <- rows i..B-1 of input n, then padding up to `step` rows."""
        em, b = self.em, self.em.b
        size = max(n.size, 1)
        elem = 8 if n.dtype == INT else em.T_bytes
        src = b.load(b.gep(em.inputs, [em.iconst(n.attr("index"))]))
        dst = b.bitcast(buf, I8P)
        live = b.mul(b.sub(em.B, i), em.iconst(size * elem))      # bytes
        # (library calls: loops here would cost LLVM time out of proportion)
        em.memcpy(dst, b.gep(src, [b.mul(i, em.iconst(size * elem))]), live)
        rest = b.sub(em.iconst(step * size * elem), live)
        if n.dtype != INT:
            em.memset(b.gep(dst, [live]), 0, rest)
            return
        last = b.gep(src, [b.mul(b.sub(em.B, em.iconst(1)), em.iconst(size * elem))])
        with em.loop(b.sdiv(rest, em.iconst(size * elem))) as r:
            em.memcpy(b.gep(dst, [b.add(live, b.mul(r, em.iconst(size * elem)))]), last,
                      size * elem)

    # ------------------------------------------------------------ accumulation

    def accumulate(self, groups: list, key: str, node: Node) -> None:
        """Add an output's per-sample values of an iteration's groups to its
        accumulator: the loss's, or the parameter's per-lane (or, with one lane, its
        final) gradient."""
        em, b = self.em, self.em.b
        lanes = groups[0].lanes
        if key.startswith("loss"):
            acc = self.loss_acc[lanes]
            b.store(em.fadd(b.load(acc), em.wide(self.group_elem(groups, node, ())),
                            flags=FAST), acc)
            return
        spec = self.param_spec(key)
        if self.rows.is_sparse(spec.name):
            self.rows.accumulate(groups, spec, node)
            return
        scattered = scatter_terms(node)
        if scattered:
            for term in scattered:
                self.accumulate_scattered(groups, spec.offset, term)
            return
        with em.loops(node.shape) as idx:
            j = em.flat(node.shape, idx)
            if lanes > 1:
                p = b.gep(self.grad_acc, [b.add(em.iconst(self.acc_offsets[spec.name]), j)])
                v = em.splat(self.group_elem(groups, node, idx), lanes)
                b.store(b.fadd(b.load(p, align=8), v, flags=FAST), p, align=8)
            else:
                p = b.gep(em.grad, [b.add(em.iconst(spec.offset), j)])
                b.store(b.fadd(b.load(p), self.group_elem(groups, node, idx), flags=FAST), p)

    def accumulate_scattered(self, groups: list, offset: int, n: Node) -> None:
        """A gather's gradient (scatter(g, i)) added into the parameter's gradient at
        the gathered positions only: each sample's g, element by element, to the
        position its index names, lane by lane (the padding lanes add 0). Its cost
        grows with the number gathered, not with the gathered array's size. These
        additions go to `grad` itself; the parameter's per-lane accumulators stay 0."""
        em, b = self.em, self.em.b
        g_node, i_node = n.inputs
        axis = n.attr("axis")
        with em.loops(g_node.shape) as idx:
            for g in groups:
                v = em.elem(g, g_node, idx)
                i = em.elem(g, i_node, (idx[axis],))
                for lane in range(g.lanes):
                    k = em.iconst(lane)
                    x = b.extract_element(v, k) if is_vector(v) else v
                    if g.lanes > 1 and g.live is not None:
                        x = b.select(b.extract_element(g.live, k), x, em.fconst(0))
                    at = list(idx)
                    at[axis] = b.extract_element(i, k) if is_vector(i) else i
                    p = b.gep(em.grad, [b.add(em.iconst(offset), em.flat(n.shape, tuple(at)))])
                    b.store(b.fadd(b.load(p), x, flags=FAST), p)

    def group_elem(self, groups: list, n: Node, idx: tuple):
        """n's element summed over the groups of an iteration (their live lanes)."""
        em = self.em
        return em.tree([em.live_only(g, em.elem(g, n, idx)) for g in groups], em.fadd)

    def reduce_lanes(self, n_grad: int) -> None:
        """Add the per-lane partial sums into the scalar accumulators, lane by lane
        (a fixed order: results are deterministic for a given B). The gradient's go
        W elements at a time: their W accumulators transposed (transpose.py), so that
        vector k holds lane k of each, and added k = 0, 1, ... in order, the sums
        hsum makes element by element; one element at a time, each sum is a chain of
        W dependent additions."""
        em, b = self.em, self.em.b
        acc = self.loss_acc[1]
        b.store(b.fadd(b.load(acc), em.hsum(b.load(self.loss_acc[em.W]))), acc)
        if not self.want_grad or not n_grad:
            return
        for lo, hi in self.lane_accumulated():
            em.sweep(lo, hi, em.W, lambda j, n, lo=lo: self.add_lane_sums(lo, j, n))

    def add_lane_sums(self, lo: int, j, n: int) -> None:
        """grad[j .. j + n) += the lane sums of their accumulators (those of the
        parameter range from lo): for n = W, the W accumulators transposed, so that
        vector k holds lane k of each (W, a power of two, as transposed needs), and
        added k = 0, 1, ... in order; for n = 1, hsum."""
        em, b = self.em, self.em.b
        p = em.elements_at(em.grad, j, n)
        if n == 1:
            total = em.hsum(b.load(self.accumulator_at(lo, j), align=8))
        else:
            accs = [b.load(self.accumulator_at(lo, b.add(j, em.iconst(k))), align=8)
                    for k in range(n)]
            lanes = transposed(b, accs)
            total = lanes[0]
            for v in lanes[1:]:
                total = b.fadd(total, v)
        b.store(b.fadd(b.load(p, align=em.T_bytes), total), p, align=em.T_bytes)

    def accumulator_offsets(self) -> dict:
        """Where each parameter that is not row-sparse starts among the per-lane
        accumulators (in units of W): in gradient order, the row-sparse ones left out."""
        offsets, at = {}, 0
        for p in self.graph.params if self.want_grad else ():
            if not self.rows.is_sparse(p.name):
                offsets[p.name], at = at, at + p.size
        return offsets

    def accumulator_at(self, lo: int, j):
        """The accumulator of gradient element j, in a range of lane_accumulated() that
        starts at lo (a parameter's start: the range's accumulators are as adjacent as
        its gradient elements, none of its parameters being row-sparse)."""
        first = next(p for p in self.graph.params if p.offset == lo and p.size)
        shift = lo - self.acc_offsets[first.name]
        return self.em.b.gep(self.grad_acc, [self.em.b.sub(j, self.em.iconst(shift))])

    def lane_accumulated(self) -> list[tuple[int, int]]:
        """The ranges of gradient elements with per-lane accumulators: all but those of
        parameters whose gradient the row kernel adds into `grad` directly, and of the
        row-sparse ones."""
        return self.dense_ranges({self.param_spec(k).name for k in self.outer.rows})

    def dense_ranges(self, skip=frozenset()) -> list[tuple[int, int]]:
        """The ranges of the gradient vector of the parameters that are not row-sparse
        (nor in `skip`), adjacent ones merged."""
        ranges = []
        for p in self.graph.params if self.want_grad else ():
            if p.name in skip or self.rows.is_sparse(p.name) or not p.size:
                continue
            if ranges and ranges[-1][1] == p.offset:
                ranges[-1] = (ranges[-1][0], p.offset + p.size)
            else:
                ranges.append((p.offset, p.offset + p.size))
        return ranges

    def epilogue(self, outs: dict, loss_acc) -> None:
        """objective = scale * (sum of per-sample terms) + mult * (once terms) + the
        penalty's (fixed) terms."""
        em, b = self.em, self.em.b
        scale, mult = self.objective_scale()
        loss = em.narrow(b.fmul(b.load(loss_acc), em.wide(scale)))
        if "loss.once" in outs:
            loss = b.fadd(loss, b.fmul(em.elem(self.once, outs["loss.once"], ()), mult))
        if "loss.fixed" in outs:
            loss = b.fadd(loss, em.elem(self.once, outs["loss.fixed"], ()))
        b.store(loss, em.value)
        if not self.want_grad:
            return
        for spec in self.graph.params:
            if self.rows.is_sparse(spec.name):
                self.rows.epilogue(spec, scale)
                continue
            once = outs.get(f"grad.{spec.name}.once")
            fixed = outs.get(f"grad.{spec.name}.fixed")
            scaled = spec.name in self.by_row_kernel     # (by its last block)
            if once is None and fixed is None:
                if not scaled:
                    em.scale(em.grad, spec.offset, spec.offset + spec.size, em.W, scale)
                continue
            with em.loops(spec.shape) as idx:
                p = b.gep(em.grad, [b.add(em.iconst(spec.offset), em.flat(spec.shape, idx))])
                v = b.load(p) if scaled else b.fmul(b.load(p), scale)
                if once is not None:
                    v = b.fadd(v, b.fmul(em.elem(self.once, once, idx), mult))
                if fixed is not None:
                    v = b.fadd(v, em.elem(self.once, fixed, idx))
                b.store(v, p)

    def objective_scale(self) -> tuple:
        """(scale, mult): the objective is scale * (sum of per-sample terms) + mult *
        (once terms): 1/B and 1 for a mean, 1 and B for a sum."""
        em, b = self.em, self.em.b
        nB = b.sitofp(em.B, em.T)
        if self.graph.reduce == "sum":
            return em.fconst(1), nB
        return b.fdiv(em.fconst(1), nB), em.fconst(1)

    def param_spec(self, key: str):
        name = key[len("grad."):].rsplit(".", 1)[0]
        return next(p for p in self.graph.params if p.name == name)
