"""Prefetches of the vector loop: a large batch's own input rows ahead of the
iteration that reads them, or a later batch a caller gathers (the fused training
steps); and the rows of row-sparse parameters that later samples of the batch gather
(codegen/sparse.py RowSparse.prefetch, with prefetch_row). docs/codegen.md has the
measurements behind each.

A large batch streams from memory: without prefetches an iteration's loads wait for
memory and its arithmetic for the loads; with them the two overlap. A batch of less
than PREFETCH_MIN_BYTES of inputs sits in the caches after its first use (a
mini-batch, an optimizer's repeated calls), where prefetches would only be
instructions, so whether a call prefetches is decided once per call.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.values import I8P, I32, declared
from lossc.ir.graph import INT, Node


PREFETCH_BYTES = 4096        # how far ahead the vector loop prefetches its inputs' rows
PREFETCH_MIN_BYTES = 1 << 20  # ... in a batch of at least this many bytes of inputs
AHEAD_ROW_LINES = 16         # prefetches per row of a later batch, at most (1 KB)
# how many samples ahead of an iteration the rows of row-sparse parameters are
# prefetched (sparse.py RowSparse.prefetch; 0: not at all), and into which caches
# (llvm.prefetch's locality: 2, L2 and beyond); docs/codegen.md has the measured choice
GATHER_AHEAD_SAMPLES = 16
GATHER_LOCALITY = 2
# how many touched rows ahead the fused steps' update of row-sparse parameters
# prefetches a row (codegen/fused.py), and into which caches (3: every level, as the
# update reads it at once); docs/codegen.md has the measured choice
UPDATE_AHEAD_ROWS = 16
UPDATE_LOCALITY = 3


def row_bytes(em, n: Node) -> int:
    """The bytes of one sample of input n."""
    return max(n.size, 1) * (8 if n.dtype == INT else em.T_bytes)


def streaming(em, inputs: list):
    """Whether this call's vector loop prefetches its own rows (an i1, computed once per
    call), or None when it never does: from PREFETCH_MIN_BYTES of inputs."""
    per_sample = sum(row_bytes(em, n) for n in inputs)
    if PREFETCH_BYTES and per_sample:
        return em.b.icmp_signed(">=", em.B, em.iconst(-(-PREFETCH_MIN_BYTES // per_sample)))
    return None


def prefetch(em, inputs: list, stream, i, count: int) -> None:
    """This iteration's prefetches: in a large batch (`stream`, see streaming) its own
    inputs' rows ahead, else a later batch of the caller's, if it gave one
    (prefetch_ahead); the choice is one branch, as predictable as the loop's."""
    if stream is None:
        prefetch_ahead(em, inputs, i, count)
        return
    with em.b.if_else(stream) as (large, otherwise):
        with large:
            prefetch_inputs(em, inputs, i, count)
        with otherwise:
            prefetch_ahead(em, inputs, i, count)


def prefetch_inputs(em, inputs: list, i, count: int) -> None:
    """Ask for the input rows of the samples PREFETCH_BYTES of each input ahead of this
    iteration's `count` samples, one prefetch per cache line (into every cache level).
    A prefetch never faults, so reading past the end of an input is harmless. An input
    whose rows take more than PREFETCH_BYTES an iteration is left to the hardware
    prefetcher: its loads are long sequential runs, the lines 4 KB ahead are this
    iteration's own, and a prefetch per line would be code to compile for each (hence
    at most PREFETCH_BYTES / 64 of them per input)."""
    b = em.b
    for n in inputs:
        size = row_bytes(em, n)
        if size * count > PREFETCH_BYTES:
            continue
        base = b.load(b.gep(em.inputs, [em.iconst(n.attr("index"))]))
        at = b.gep(base, [b.add(b.mul(i, em.iconst(size)), em.iconst(PREFETCH_BYTES))])
        prefetch_lines(em, at, -(-size * count // 64), locality=3)


def prefetch_ahead(em, inputs: list, i, count: int) -> None:
    """A batch the caller gathers later (the fused training steps, codegen/fused.py:
    the one AHEAD_BATCHES on): this iteration's share of its rows, into L2.
    The frame's `ahead` lists their addresses, input by input, `ahead_rows` rows per
    input (0: none, every other caller); iteration i takes rows i*rows/B up to
    (i + count)*rows/B.

    Why: the steps gather each batch's rows into contiguous buffers before calling the
    gradient. From a data set larger than L2 a gather waits on memory, a few lines at a
    time (the core's line fill buffers), with nothing else to do; the gradient then
    computes with the memory idle. Asked for here, a few rows per iteration, a later
    batch's lines arrive while this one computes, and its gather copies from L2. Asked
    for all at once, before the call, they fill the fill buffers and the gradient's own
    loads wait behind them. One prefetch per 64 bytes from the row's start, at most
    AHEAD_ROW_LINES: a row starting inside a line leaves its last line to the
    gather."""
    b = em.b
    rows, table = em.ahead_rows, em.ahead
    with b.if_then(b.icmp_signed(">", rows, em.iconst(0)), likely=False):
        lo = b.sdiv(b.mul(i, rows), em.B)
        hi = b.sdiv(b.mul(b.add(i, em.iconst(count)), rows), em.B)
        hi = b.select(b.icmp_signed("<", hi, rows), hi, rows)
        with em.loop(hi, start=lo) as t:
            for n in inputs:
                at = b.add(b.mul(em.iconst(n.attr("index")), rows), t)
                row = b.inttoptr(b.load(b.gep(table, [at])), I8P)
                prefetch_lines(em, row, min(-(-row_bytes(em, n) // 64), AHEAD_ROW_LINES),
                               locality=2)


def prefetch_row(em, start, nbytes: int, locality: int) -> None:
    """Prefetches of the cache lines of a row of nbytes from `start` (an i8*, anywhere
    in a line): one per 64 bytes from its start and one at its last byte (a row of
    256 bytes not starting a line spans five lines), at most AHEAD_ROW_LINES."""
    lines = min(-(-nbytes // 64), AHEAD_ROW_LINES)
    offsets = sorted({64 * line for line in range(lines)}
                     | ({nbytes - 1} if lines < AHEAD_ROW_LINES else set()))
    prefetch_at(em, start, offsets, locality)


def prefetch_span(em, start, nbytes, locality: int) -> None:
    """prefetch_row for a row of nbytes known only at run time (an i64, at least 1):
    a loop of one prefetch per 64 bytes from its start, at most AHEAD_ROW_LINES, and,
    below that many, one at its last byte (for a long row, its first byte again)."""
    b = em.b
    lines = b.udiv(b.add(nbytes, em.iconst(63)), em.iconst(64))
    short = b.icmp_signed("<", lines, em.iconst(AHEAD_ROW_LINES))
    with em.loop(b.select(short, lines, em.iconst(AHEAD_ROW_LINES))) as line:
        prefetch_at(em, b.gep(start, [b.mul(line, em.iconst(64))]), [0], locality)
    last = b.select(short, b.sub(nbytes, em.iconst(1)), em.iconst(0))
    prefetch_at(em, b.gep(start, [last]), [0], locality)


def prefetch_lines(em, start, lines: int, locality: int) -> None:
    """Prefetches (for reading, of data) of `lines` cache lines from `start` (an i8*)
    on; locality as llvm.prefetch has it: 3 keeps the lines in every cache level, 2 in
    L2 and beyond."""
    prefetch_at(em, start, [64 * line for line in range(lines)], locality)


def prefetch_at(em, start, offsets, locality: int) -> None:
    """llvm.prefetch (for reading, of data) of the bytes at `offsets` from `start`."""
    b = em.b
    fn = declared(em.module, "llvm.prefetch.p0", ir.VoidType(), [I8P, I32, I32, I32])
    for off in offsets:
        b.call(fn, [b.gep(start, [em.iconst(off)]), ir.Constant(I32, 0),
                    ir.Constant(I32, locality), ir.Constant(I32, 1)])
