"""The emitters: where code goes, and how a node's elements are read and written.

`Emitter` is what every kernel function needs: the module and function being emitted,
the builder, the real type T, constants and scalar-or-vector arithmetic (values.py),
counted loops, and variables in the entry block. A kernel that is a function of its
own (the outer-product kernels) gets a fresh one.

`GraphEmitter` is the emitter of a model function (codegen/llvm.py): it adds the
function's arguments, the scratch space `work` that tensor values are kept in, and
element access: `elem(g, n, idx)` is n's element at idx as lane group g (lanes.py)
sees it, a vector across the lanes for a per-sample value in the vector loop. The op
table's lowering rules (lossc/ir/ops) are written against this class: elementwise
arithmetic from values.py, and one method per kernel (the tensor ops' loops, the index
check), each handing its arguments to the kernel's plain function in its own module.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from lossc.codegen import abi, gemm, matmul, reduce, rows, softmax
from lossc.codegen.index import check_index
from lossc.pairwise import pairwise
from lossc.codegen.values import I1, I8P, I64, ValueEmitter, counted_loop, declared, is_vector
from lossc.ir.graph import BOOL, INT, Graph, Node, varying
from lossc.ir.ops import OPS


class Emitter(ValueEmitter):
    """Code into function `fn`: `entry` is the block its variables go in."""

    def __init__(self, module: ir.Module, T, fn: ir.Function, builder: ir.IRBuilder,
                 entry: ir.Block):
        super().__init__(module, T, builder)
        self.fn = fn
        self.entry = entry

    @staticmethod
    def for_kernel(module: ir.Module, T, fn: ir.Function) -> "Emitter":
        """An emitter positioned in the body of a new kernel function."""
        return Emitter(module, T, fn, ir.IRBuilder(fn.append_basic_block()),
                       fn.entry_basic_block)

    @staticmethod
    def kernel_function(module: ir.Module, T, name: str, arg_types: list,
                        noalias: tuple = ()) -> tuple[ir.Function, "Emitter"]:
        """A new internal void function of the module, for a kernel, and an emitter
        positioned in its body."""
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), arg_types), name=name)
        fn.linkage = "internal"
        for k in noalias:
            fn.args[k].add_attribute("noalias")
        return fn, Emitter.for_kernel(module, T, fn)

    def sweep(self, lo: int, hi, lanes: int, body) -> None:
        """body(j, n) over the elements lo .. hi - 1: n = `lanes` at j = lo, lo + lanes,
        ... while a whole vector of them fits, then n = 1 for each of the last
        (hi - lo) mod lanes. hi is an int, or an i64 known only at run time (the
        elements of a call's touched rows). LLVM's passes as lossc runs them vectorize
        no loop, so a loop over many elements is written in vectors here."""
        b = self.b
        if isinstance(hi, int):
            full = lo + (hi - lo) // lanes * lanes if lanes > 1 else lo
            vectors, rest = full > lo, full < hi
            full, hi = self.iconst(full), self.iconst(hi)
        else:
            n = b.sub(hi, self.iconst(lo))
            full = b.sub(hi, b.urem(n, self.iconst(lanes))) if lanes > 1 else self.iconst(lo)
            vectors, rest = lanes > 1, True
        if vectors:
            with self.loop(full, start=self.iconst(lo), step=lanes) as j:
                body(j, lanes)
        if rest:
            with self.loop(hi, start=full) as j:
                body(j, 1)

    def elements_at(self, base, j, n: int):
        """A pointer to the n elements of base from base[j] on: a <n x T>* for n > 1,
        aligned to T only (loads and stores through it take align=T_bytes)."""
        p = self.b.gep(base, [j])
        return self.b.bitcast(p, ir.VectorType(self.T, n).as_pointer()) if n > 1 else p

    def fill(self, base, lo: int, hi, lanes: int, value) -> None:
        """base[lo .. hi) = value (a T), by sweep."""
        b = self.b
        self.sweep(lo, hi, lanes, lambda j, n: b.store(
            self.splat(value, n), self.elements_at(base, j, n), align=self.T_bytes))

    def scale(self, base, lo: int, hi, lanes: int, factor) -> None:
        """base[lo .. hi) *= factor (a T), by sweep."""
        b = self.b

        def times(j, n):
            p = self.elements_at(base, j, n)
            b.store(b.fmul(b.load(p, align=self.T_bytes), self.splat(factor, n)), p,
                    align=self.T_bytes)
        self.sweep(lo, hi, lanes, times)

    def memset(self, start, byte: int, nbytes) -> None:
        """llvm.memset of nbytes (an int or an i64) from `start`. A short length known
        here becomes a few vector stores, where a loop would store an element an
        iteration (LLVM's passes as lossc runs them turn no loop into a fill); a long or
        run-time one, a C library call."""
        b = self.b
        fn = declared(self.module, "llvm.memset.p0.i64", ir.VoidType(),
                      [I8P, ir.IntType(8), I64, I1])
        b.call(fn, [b.bitcast(start, I8P), ir.Constant(ir.IntType(8), byte),
                    self.iconst(nbytes) if isinstance(nbytes, int) else nbytes,
                    ir.Constant(I1, 0)])

    def memcpy(self, dst, src, nbytes) -> None:
        """llvm.memcpy of nbytes (an int or an i64) from src to dst, which do not
        overlap; as memset, a short length known here becomes a few vector moves."""
        b = self.b
        fn = declared(self.module, "llvm.memcpy.p0.p0.i64", ir.VoidType(),
                      [I8P, I8P, I64, I1])
        b.call(fn, [b.bitcast(dst, I8P), b.bitcast(src, I8P),
                    self.iconst(nbytes) if isinstance(nbytes, int) else nbytes,
                    ir.Constant(I1, 0)])

    def alloca(self, ty, name=""):
        """A variable, in the entry block so that LLVM promotes it to a register."""
        with self.b.goto_block(self.entry):
            return self.b.alloca(ty, name=name)

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

    @staticmethod
    def tree(vals: list, combine):
        """vals combined as a balanced tree of adjacent pairs (lossc/pairwise.py)."""
        return pairwise(vals, combine)

    def wide(self, v):
        """v (a scalar or a vector of T) in double precision."""
        if isinstance(self.T, ir.DoubleType):
            return v
        ty = ir.VectorType(ir.DoubleType(), v.type.count) if is_vector(v) else ir.DoubleType()
        return self.b.fpext(v, ty)

    def narrow(self, v):
        """A double (or vector of them) rounded to T."""
        if isinstance(self.T, ir.DoubleType):
            return v
        ty = ir.VectorType(self.T, v.type.count) if is_vector(v) else self.T
        return self.b.fptrunc(v, ty)

    def hsum(self, v):
        """A vector's lanes added in order."""
        b = self.b
        total = b.extract_element(v, self.iconst(0))
        for lane in range(1, v.type.count):
            total = b.fadd(total, b.extract_element(v, self.iconst(lane)))
        return total


class GraphEmitter(Emitter):
    """The emitter of a model function: its arguments (`args`, named as in llvm.py's
    frame), its scratch space, and the elements of the graph's nodes."""

    def __init__(self, module: ir.Module, graph: Graph, T, W: int, fn: ir.Function,
                 entry: ir.Block, builder: ir.IRBuilder):
        super().__init__(module, T, fn, builder, entry)
        self.graph = graph
        self.W = W
        args = {a.name: a for a in fn.args}     # the frame's slots (abi.VALUE_AND_GRAD)
        (self.params, self.hypers, self.inputs, self.B, self.value, self.work, self.err,
         self.grad, self.ahead, self.ahead_rows, self.sparse) = (
            args[s.name] for s in abi.VALUE_AND_GRAD.slots)
        self.vary = varying(graph)
        self.work_size = 0
        self.row_bases: dict[int, ir.Value] = {}   # input -> base pointer (llvm.py tail)
        self.blocks: dict[int, tuple] = {}   # block_matmul -> its buffers and kernel

    # ------------------------------------------------------------ memory

    def buffer(self, size: int) -> ir.Value:
        """Space for `size` elements in `work`, starting on a 64-byte boundary (the
        runtime aligns `work` itself), so that no vector load straddles two cache
        lines."""
        per_line = 64 // (8 if isinstance(self.T, ir.DoubleType) else 4)
        off = -(-self.work_size // per_line) * per_line
        self.work_size = off + max(size, 1)
        return self.b.gep(self.work, [self.iconst(off)])

    def vector_node(self, g, n: Node) -> bool:
        """Whether n's elements are <W x T> vectors in group g."""
        return g.lanes > 1 and n.id in self.vary

    def elem_type(self, g, n: Node):
        base = {BOOL: I1, INT: I64}.get(n.dtype, self.T)
        return ir.VectorType(base, g.lanes) if self.vector_node(g, n) else base

    def node_buffer(self, g, n: Node):
        """Space in `work` for n's elements (vectors of lanes for per-sample values)."""
        if self.vector_node(g, n):
            ptr = self.buffer(n.size * g.lanes)
            return self.b.bitcast(ptr, ir.VectorType(self.T, g.lanes).as_pointer())
        return self.buffer(n.size)

    def result_buffer(self, g, n: Node):
        """n's buffer for group g, made now: where a kernel stores n's elements."""
        g.buffers[n.id] = self.node_buffer(g, n)
        return g.buffers[n.id]

    # ------------------------------------------------------------ elements

    def compute(self, g, n: Node, idx: tuple) -> ir.Value:
        """The element of n at idx, from its op's lowering rule."""
        d = OPS[n.op]
        if d.kind == "elem":
            return d.lower(self, g, n, *[self.elem(g, i, idx) for i in n.inputs])
        return d.lower(self, g, n, idx)

    def elem(self, g, n: Node, idx: tuple) -> ir.Value:
        """n's element at idx as group g sees it: a value computed already, a load from
        a buffer or the arguments, or computed here (a fused value, a view)."""
        if any(is_vector(i) for i in idx):
            return self.gather(g, n, idx)
        if n.id in g.values:
            return g.values[n.id]
        if n.id in g.buffers:
            v = self.b.load(self.b.gep(g.buffers[n.id], [self.flat(n.shape, idx)]), align=8)
            # buffers hold reals; a bool tensor is kept as 0.0/1.0
            return self.fcmp("!=", v, self.fconst(0)) if n.dtype == BOOL else v
        return self.compute(g, n, idx)

    def gather(self, g, n: Node, idx: tuple) -> ir.Value:
        """n at an index that differs between lanes (a data-dependent index): lane by
        lane. Each lane reads its own sample's element."""
        b = self.b
        width = next(i.type.count for i in idx if is_vector(i))
        lanes = []
        for lane in range(width):
            li = tuple(b.extract_element(i, self.iconst(lane)) if is_vector(i) else i
                       for i in idx)
            v = self.elem(g, n, li)
            lanes.append(b.extract_element(v, self.iconst(lane)) if is_vector(v) else v)
        return self.vector_of(lanes)

    def store(self, g, n: Node, idx: tuple, v: ir.Value) -> None:
        if n.dtype == BOOL:
            v = self.select(v, self.fconst(1), self.fconst(0))
        if self.vector_node(g, n):
            v = self.splat(v, g.lanes)
        self.b.store(v, self.b.gep(g.buffers[n.id], [self.flat(n.shape, idx)]), align=8)

    def live_only(self, g, v):
        """v (group g's per-sample value) with its padding lanes zeroed."""
        if g.lanes == 1 or g.live is None:
            return v
        if not is_vector(v):
            v = self.splat(v, g.lanes)
        return self.b.select(g.live, v, self.splat(self.fconst(0), g.lanes))

    # ------------------------------------------------------------ the arguments

    def param_element(self, n: Node, idx: tuple) -> ir.Value:
        off = self.b.add(self.iconst(n.attr("offset")), self.flat(n.shape, idx))
        return self.b.load(self.b.gep(self.params, [off]))

    def hyper_element(self, n: Node, idx: tuple) -> ir.Value:
        off = self.b.add(self.iconst(n.attr("index")), self.flat(n.shape, idx))
        return self.b.load(self.b.gep(self.hypers, [off]))

    def input_row(self, g, n: Node) -> list:
        """Pointers to group g's rows of an input, one per lane (made once per group)."""
        k = n.attr("index")
        if k not in g.input_rows:
            b = self.b
            ty = I64 if n.dtype == INT else self.T
            base = self.row_bases.get(k) or b.bitcast(b.load(b.gep(self.inputs,
                                                                   [self.iconst(k)])),
                                                      ty.as_pointer())
            size = self.iconst(max(n.size, 1))
            rows = []
            for lane in range(g.lanes):
                sample = b.add(g.sample, self.iconst(lane)) if lane else g.sample
                rows.append(b.gep(base, [b.mul(sample, size)]))
            g.input_rows[k] = rows
        return g.input_rows[k]

    def input_element(self, g, n: Node, idx: tuple) -> ir.Value:
        b = self.b
        rows = g.input_rows[n.attr("index")]
        off = self.flat(n.shape, idx)
        if len(rows) == 1:
            return b.load(b.gep(rows[0], [off]))
        if n.size == 1:   # a scalar input: the lanes' values are contiguous
            vt = ir.VectorType(rows[0].type.pointee, len(rows))
            return b.load(b.bitcast(rows[0], vt.as_pointer()),
                          align=8 if rows[0].type.pointee == I64 else self.T_bytes)
        return self.vector_of([b.load(b.gep(row, [off])) for row in rows])

    def once_pointer(self, g, w: Node):
        """Where a once-per-call value's elements lie (a parameter or a buffer), or
        None if it has no memory of its own."""
        if w.op == "param":
            return self.b.gep(self.params, [self.iconst(w.attr("offset"))])
        return g.buffers.get(w.id)

    # ------------------------------------------------------------ kernels of the op table
    # (each in its own module; the lowering rules of lossc/ir/ops call them here)

    def check_index(self, g, n: Node, i):
        return check_index(self, g, n, i)

    def reduce(self, g, n: Node, kind: str) -> None:
        reduce.lower_reduce(self, g, n, kind)

    def argext_mask(self, g, n: Node) -> None:
        reduce.lower_argext(self, g, n)

    def prod_others(self, g, n: Node) -> None:
        reduce.lower_prod_others(self, g, n)

    def softmax(self, g, n: Node, log: bool) -> None:
        softmax.lower_softmax(self, g, n, log)

    def matmul(self, g, n: Node) -> None:
        matmul.lower_matmul(self, g, n)

    # ... and the fused ops of the lower pass (lossc/ir/ops/lowered.py)

    def row_dot(self, g, n: Node) -> ir.Value:
        return rows.row_dot(self, g, *n.inputs)

    def row_matvec(self, g, n: Node) -> None:
        rows.row_matvec(self, g, n, *n.inputs)

    def block_matmul(self, g, n: Node) -> None:
        gemm.block_matmul(self, g, n)

    def logsumexp_softmax(self, g, n: Node) -> None:
        softmax.logsumexp_softmax(self, g, n)
