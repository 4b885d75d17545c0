"""Row-sparse gradients: a parameter used only through gathers (`E[u]`, `E[tok]`) gets
the gradient of the rows a batch touched, not one the size of its table.

The lower pass makes such a parameter's per-sample gradient a `row_scatter(g0, i0, g1,
i1, ...)` (passes/lower.py): each g_k added at the rows its i_k names. The gradient
function accumulates it into the parameter's RowGrads record (codegen/abi.py), which
the caller passes in the frame's `sparse` table:

    prologue     generation += 1 (the last call's entries of the table are free at
                 once), count = 0
    per sample   for each row it touches: its slot, from the record's hash table
                 (an entry of this call's generation whose slot lists the row: that
                 slot; else, at the first free entry, a new slot: count += 1, the row
                 listed in `rows`, its gradient zeroed), then the row's gradient added
                 into grads[slot], samples in batch order: W elements at a time
                 (a lane group's rows transposed, one vector add per lane), the last
                 width mod W (every one without SIMD) element by element
    epilogue     grads[0 .. count) scaled as the objective is (1/B for a mean); with
                 `dense`, the parameter's part of `grad` zeroed and the rows copied in

So a call costs O(rows touched x row width) for such a parameter, whatever its table's
size: the hash table is sized by the batch (at least twice the rows a batch may touch),
not by the parameter's rows, so it stays in cache however large the parameter, and no
access but the rows' own goes to a place the table's size decides. Nothing has to be
reset after a call (the next generation frees every entry; the record is left
consistent even by a call stopped by an index error). Each
element of a row receives the samples' contributions in the order the dense gradient
did, from 0, and is scaled once: the dense gradient written from the rows is the one
the plain code computes, bit for bit (tests/test_sparse.py).

The padding lanes of the last iteration add their values to a sink row past the
record's capacity (never read), so the per-element loop has no branch.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.abi import ROW_GRADS
from lossc.codegen.emitter import Emitter
from lossc.codegen.prefetch import GATHER_AHEAD_SAMPLES, GATHER_LOCALITY, prefetch_row
from lossc.codegen.transpose import transposed
from lossc.codegen.values import I8P, I64, is_vector
from lossc.ir.graph import Node

GENERATION_LIMIT = 1 << 31      # (abi.ROW_GRADS: the entries hold generation << 32 | slot)
SLOT_BITS = 32
# Fibonacci hashing: a row's entry is bits 32.. of row x 2^64 / golden ratio, masked
# (consecutive rows, as most tables are indexed, land far apart)
HASH_MULTIPLIER = 0x9E3779B97F4A7C15 - (1 << 64)


def row_index(em, row_shape: tuple, c) -> tuple:
    """The index in a row of shape row_shape of its element c (row-major)."""
    idx = []
    for s in reversed(row_shape[1:]):
        idx.append(em.b.urem(c, em.iconst(s)))
        c = em.b.udiv(c, em.iconst(s))
    return tuple(reversed(idx + [c])) if row_shape else ()


def index_input(pair: tuple):
    """The int input a (g, i) pair of a row_scatter takes its row from, when i is
    that input itself, one index a sample (range-checked, `P[u]`), else None."""
    i = pair[1]
    if i.op == "checked_index":
        i = i.inputs[0]
    return i if i.op == "input" and i.rank == 0 else None


def row_pairs(n: Node) -> list:
    """A row_scatter's (g, i) pairs."""
    return list(zip(n.inputs[0::2], n.inputs[1::2]))


class RowSparse:
    """The row-sparse parameters of one model function: their records, set up in the
    prologue, the per-sample accumulation, and the epilogue."""

    def __init__(self, em, params, outs: dict):
        self.em = em
        self.entries = []            # (param spec, row_scatter node), declaration order
        for spec in params:
            node = outs.get(f"grad.{spec.name}.sample")
            if node is not None and node.op == "row_scatter":
                self.entries.append((spec, node))
        self.names = {spec.name for spec, _ in self.entries}
        self.state = {}              # name -> the record's pointers and values

    def __bool__(self) -> bool:
        return bool(self.entries)

    def is_sparse(self, name: str) -> bool:
        return name in self.names

    # ------------------------------------------------------------ prologue

    def prologue(self) -> None:
        """Each record: a new generation (its hash table cleared when the generation
        reaches the limit), no row touched yet."""
        em, b = self.em, self.em.b
        for k, (spec, node) in enumerate(self.entries):
            at = em.iconst(k * len(ROW_GRADS))

            def slot(name, at=at):
                return ROW_GRADS.load(b, em.sparse, name, T=em.T, at=at)

            table, mask = slot("table"), slot("mask")
            gen = b.add(slot("generation"), em.iconst(1))
            wrap = b.icmp_signed(">=", gen, em.iconst(GENERATION_LIMIT))
            with b.if_then(wrap, likely=False):
                words = b.add(mask, em.iconst(1))
                em.memset(table, 0, b.mul(words, em.iconst(8)))
            gen = b.select(wrap, em.iconst(1), gen)
            ROW_GRADS.store(b, em.sparse, "generation", gen, at=at)
            count = em.alloca(I64, f"rows_{spec.name}")
            b.store(em.iconst(0), count)
            self.state[spec.name] = dict(
                at=at, table=table, mask=mask, tag=b.shl(gen, em.iconst(SLOT_BITS)),
                rows=slot("rows"), grads=slot("grads"), sink=slot("capacity"),
                count=count, width=node.size // node.shape[0])

    # ------------------------------------------------------------ per sample

    def prefetch(self, i, count: int) -> None:
        """Prefetches of the rows the samples GATHER_AHEAD_SAMPLES after this
        iteration's `count` (from i) will gather, for each row-sparse parameter indexed
        by an int input itself (`P[u]`). Such rows are at random places in a table that
        may be far larger than the caches: without prefetches each iteration waits
        for its rows from memory (and the page walks to find them), one iteration's
        handful at a time; asked for this far ahead, they arrive while the samples
        before compute. The index is read from the input (the last sample's for
        samples past the batch); an index out of range makes a prefetch of an
        address outside the table, which never faults (the gather itself checks it)."""
        em, b = self.em, self.em.b
        if not GATHER_AHEAD_SAMPLES:
            return
        last = b.sub(em.B, em.iconst(1))
        for spec, node in self.entries:
            width = node.size // node.shape[0]
            for k in sorted({n.attr("index") for n in map(index_input, row_pairs(node))
                             if n is not None}):
                rows = b.bitcast(b.load(b.gep(em.inputs, [em.iconst(k)])),
                                 I64.as_pointer())
                for s in range(count):
                    at = b.add(i, em.iconst(GATHER_AHEAD_SAMPLES + s))
                    at = b.select(b.icmp_signed("<", at, em.B), at, last)
                    first = b.add(em.iconst(spec.offset),
                                  b.mul(b.load(b.gep(rows, [at])), em.iconst(width)))
                    prefetch_row(em, b.bitcast(b.gep(em.params, [first]), I8P),
                                 width * em.T_bytes, locality=GATHER_LOCALITY)

    def accumulate(self, groups: list, spec, node: Node) -> None:
        """An iteration's per-sample gradients of a row-sparse parameter added into its
        touched rows."""
        for g_node, i_node in row_pairs(node):
            if i_node.rank == 0:
                self.add_rows(groups, spec, g_node, i_node, None)
            else:
                with self.em.loop(i_node.shape[0]) as l:
                    self.add_rows(groups, spec, g_node, i_node, l)

    def add_rows(self, groups: list, spec, g_node: Node, i_node: Node, l) -> None:
        """The rows g_node adds at i_node (element l of an index vector, or the index
        itself for l None), every lane of every group: first each lane's slot, then the
        row, in vectors of W elements and the remainder element by element."""
        em, b = self.em, self.em.b
        st = self.state[spec.name]
        lanes = groups[0].lanes
        slots = em.alloca(ir.ArrayType(I64, len(groups) * lanes), f"slots_{spec.name}")
        at = () if l is None else (l,)
        for k, g in enumerate(groups):
            i = em.elem(g, i_node, at)
            for lane in range(lanes):
                row = b.extract_element(i, em.iconst(lane)) if is_vector(i) else i
                where = b.gep(slots, [em.iconst(0), em.iconst(k * lanes + lane)])
                if lanes > 1 and g.live is not None:
                    b.store(st["sink"], where)
                    with b.if_then(b.extract_element(g.live, em.iconst(lane))):
                        b.store(self.slot_of(st, row), where)
                else:
                    b.store(self.slot_of(st, row), where)
        row_shape = g_node.shape if l is None else g_node.shape[1:]
        bases = [b.mul(b.load(b.gep(slots, [em.iconst(0), em.iconst(j)])),
                       em.iconst(st["width"])) for j in range(len(groups) * lanes)]
        whole = st["width"] - st["width"] % lanes if lanes > 1 else 0
        if whole:
            self.add_row_vectors(groups, st["grads"], g_node, at, row_shape, bases, whole)
        if whole < st["width"]:
            self.add_row_elements(groups, st["grads"], g_node, at, row_shape, bases, whole,
                                  st["width"])

    def add_row_vectors(self, groups: list, grads, g_node: Node, at: tuple,
                        row_shape: tuple, bases: list, whole: int) -> None:
        """Elements 0 .. whole (a multiple of W) of every lane's row, W at a time: the
        group's W lane vectors of elements c .. c+W-1 transposed into each lane's W
        elements (codegen/transpose.py), each added into its slot's row by one vector
        load, add and store. Lanes are taken in order, so each element receives its
        samples' terms in batch order, as element by element (and lanes that share a
        slot, a row repeated in the batch, add up)."""
        em, b = self.em, self.em.b
        lanes = groups[0].lanes
        VT = ir.VectorType(em.T, lanes)
        with em.loop(whole, step=lanes) as c0:
            for k, g in enumerate(groups):
                columns = []
                for j in range(lanes):
                    c = b.add(c0, em.iconst(j)) if j else c0
                    v = em.elem(g, g_node, at + row_index(em, row_shape, c))
                    columns.append(em.splat(v, lanes))
                for lane, row in enumerate(transposed(b, columns)):
                    p = b.bitcast(b.gep(grads, [b.add(bases[k * lanes + lane], c0)]),
                                  VT.as_pointer())
                    b.store(b.fadd(b.load(p, align=em.T_bytes), row), p, align=em.T_bytes)

    def add_row_elements(self, groups: list, grads, g_node: Node, at: tuple,
                         row_shape: tuple, bases: list, start: int, width: int) -> None:
        """Elements start .. width of every lane's row (all of them without SIMD, the
        last width mod W with it), one by one."""
        em, b = self.em, self.em.b
        lanes = groups[0].lanes
        with em.loop(width, start=em.iconst(start)) as c:
            cidx = row_index(em, row_shape, c)
            for k, g in enumerate(groups):
                v = em.elem(g, g_node, at + cidx)
                for lane in range(lanes):
                    x = b.extract_element(v, em.iconst(lane)) if is_vector(v) else v
                    p = b.gep(grads, [b.add(bases[k * lanes + lane], c)])
                    b.store(b.fadd(b.load(p), x), p)

    def slot_of(self, st: dict, row) -> ir.Value:
        """The slot of `row` in this call: the one the hash table gives it, or a new one
        (the row listed, its gradient zeroed)."""
        fn = self.slot_function(st["width"])
        return self.em.b.call(fn, [st["table"], st["mask"], st["tag"], st["count"],
                                   st["rows"], st["grads"], row])

    def slot_function(self, width: int) -> ir.Function:
        """lossc_row_slot_<width>(table, mask, tag, count*, rows, grads, row) -> slot:
        one function per row width in the module, called per lane (LLVM inlines it
        where that pays). Linear probing from the row's hash: an entry of another
        generation is free (the row is new: its slot taken there), one of this
        generation holds a slot whose listed row is the row or another one (probe on)."""
        em = self.em
        name = f"lossc_row_slot_{width}"
        fn = em.module.globals.get(name)
        if fn is not None:
            return fn
        T = em.T
        new = ir.Function(em.module, ir.FunctionType(I64, [
            I64.as_pointer(), I64, I64, I64.as_pointer(), I64.as_pointer(), T.as_pointer(),
            I64]), name=name)
        new.linkage = "internal"
        k = Emitter.for_kernel(em.module, T, new)
        b = k.b
        table, mask, tag, count, rows, grads, row = new.args
        start = b.and_(b.lshr(b.mul(row, k.iconst(HASH_MULTIPLIER)), k.iconst(SLOT_BITS)),
                       mask)
        entry = b.block
        probe, listed, found, taken, on = (
            new.append_basic_block(n) for n in ("probe", "listed", "found", "taken", "on"))
        b.branch(probe)
        b.position_at_end(probe)
        h = b.phi(I64)
        h.add_incoming(start, entry)
        word = b.load(b.gep(table, [h]))
        free = b.icmp_unsigned("!=", b.and_(word, k.iconst(-1 << SLOT_BITS)), tag)
        b.cbranch(free, taken, listed)
        b.position_at_end(listed)
        s = b.and_(word, k.iconst((1 << SLOT_BITS) - 1))
        b.cbranch(b.icmp_signed("==", b.load(b.gep(rows, [s])), row), found, on)
        b.position_at_end(found)
        b.ret(s)
        b.position_at_end(on)
        h.add_incoming(b.and_(b.add(h, k.iconst(1)), mask), on)
        b.branch(probe)
        b.position_at_end(taken)
        s = b.load(count)
        b.store(b.add(s, k.iconst(1)), count)
        b.store(b.or_(tag, s), b.gep(table, [h]))
        b.store(row, b.gep(rows, [s]))
        k.memset(b.gep(grads, [b.mul(s, k.iconst(width))]), 0, width * k.T_bytes)
        b.ret(s)
        return new

    # ------------------------------------------------------------ epilogue

    def epilogue(self, spec, scale) -> None:
        """The touched rows scaled; the count stored; with `dense`, the parameter's
        dense gradient written (zeros, then the rows)."""
        em, b = self.em, self.em.b
        st = self.state[spec.name]
        width = st["width"]
        count = b.load(st["count"])
        ROW_GRADS.store(b, em.sparse, "count", count, at=st["at"])
        em.scale(st["grads"], 0, b.mul(count, em.iconst(width)), em.W, scale)
        dense = ROW_GRADS.load(b, em.sparse, "dense", at=st["at"])
        with b.if_then(b.icmp_signed("!=", dense, em.iconst(0))):
            start = b.gep(em.grad, [em.iconst(spec.offset)])
            em.memset(start, 0, spec.size * em.T_bytes)
            with em.loop(count) as s:
                to = b.mul(b.load(b.gep(st["rows"], [s])), em.iconst(width))
                em.memcpy(b.gep(start, [to]), b.gep(st["grads"], [b.mul(s, em.iconst(width))]),
                          width * em.T_bytes)
