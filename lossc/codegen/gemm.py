"""The block product: W @ x (or x @ A) of an input row x for a block of samples at
once, as one register-tiled matrix product with the samples as a dimension.

Per sample, W @ x reads every element of W for D*H multiply-adds: a matrix-vector
product, bound by the loads of W. For a block of S samples the same products are one
matrix product C = W X^T (H x D times D x S), in which each loaded element of W feeds
the FMAs of many samples and each loaded vector of samples the FMAs of many rows of W.
The lower pass makes `block_matmul` where the product is large enough for that to pay
(passes/lower.py, BLOCK_MIN_OUTPUTS); the first lane group of each block calls the
kernel, and every group of the block then reads its rows of C as the lane vectors
every per-sample value is (codegen/llvm.py).

The kernel, for the block's `count` samples (S, or fewer at the end of the batch):

1. packs the block's rows of X into lane vectors, Xt[c][d] = (x_{cW}[d], ...,
   x_{cW+W-1}[d]) for each group c of W samples: W x W blocks transposed by shuffles
   (codegen/transpose.py); a last group of fewer than W samples is padded with zeros;
2. computes C[c][h] (the same layout: group c's output h as a lane vector) in
   micro-tiles of MR rows of W by NR groups, MR*NR accumulators in registers through
   the whole sum over d: per d, MR broadcast elements of W and NR loaded vectors feed
   MR*NR FMAs. Rows of W are read where they lie (a parameter or a buffer), so
   x @ A is the same kernel with A's strides.

The tile is chosen by the vector registers the target has (`tile_shape`): 32 with
512-bit vectors (AVX-512), 16 with narrower ones (AVX2, SSE): MR*NR accumulators and
NR + 1 registers for the loads. The code does not grow with the sizes: it is four
micro-tiles (MR rows and the last H mod MR rows, each for NR groups and for one group)
in loops, so compile time does not grow with the layer.

Each output is one sum over d = 0, 1, ..., D-1 in order, one FMA per term, in every
tile: a sample's value depends neither on its lane, nor on its block, nor on B.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from lossc.codegen.transpose import transpose_rows
from lossc.codegen.values import CONTRACT, I64
from lossc.ir.graph import Node

# micro-tile (rows of W, groups of samples) by the target's vector registers
TILES = {32: (6, 4), 16: (4, 3)}
BLOCK_TILES = 2     # micro-tile columns per block: a block is BLOCK_TILES*NR lane groups


def vector_registers(vector_bits: int) -> int:
    """32 with 512-bit vectors (AVX-512), else 16 (AVX2, SSE)."""
    return 32 if vector_bits >= 512 else 16


def tile_shape(lanes: int, real_bytes: int) -> tuple[int, int]:
    """(MR, NR) for vectors of `lanes` reals of `real_bytes` bytes."""
    return TILES[vector_registers(lanes * real_bytes * 8)]


def block_samples(lanes: int, real_bytes: int) -> int:
    """Samples per block: a multiple of every vector loop's step (one or two lane
    groups), so a block starts at the first group of an iteration."""
    return BLOCK_TILES * tile_shape(lanes, real_bytes)[1] * lanes


@dataclass
class Operands:
    """Where a block_matmul's operands lie and how they are read: the matrix's element
    (h, d) at h*row_stride + d*depth_stride, the input's index."""

    matrix: Node
    x: Node
    row_stride: int
    depth_stride: int

    @staticmethod
    def of(n: Node) -> "Operands":
        p, q = n.inputs
        if q.rank == 1:     # W @ x: W is H x D
            return Operands(p, q, p.shape[1], 1)
        return Operands(q, p, 1, q.shape[1])      # x @ A: A is D x H


def block_matmul(em, g, n: Node) -> None:
    """n = W @ x (or x @ A) for lane group g: the block's first group computes the
    whole block; g's values are then its rows of the block's result."""
    b = em.b
    ops = Operands.of(n)
    H, D, S, W = n.size, ops.x.size, block_samples(em.W, em.T_bytes), em.W
    block = em.blocks.get(n.id)
    if block is None:
        with b.goto_block(em.entry):
            VT = ir.VectorType(em.T, W)
            result = b.bitcast(em.buffer(H * S), VT.as_pointer())
            packed = em.buffer(D * S)
        kernel = gemm_kernel(em, f"{em.fn.name}_gemm_{len(em.blocks)}", ops, H, D)
        block = em.blocks[n.id] = (result, packed, kernel)
    result, packed, kernel = block
    offset = b.urem(g.sample, em.iconst(S))
    with b.if_then(b.icmp_signed("==", offset, em.iconst(0))):
        count = b.sub(em.B, g.sample)
        count = b.select(b.icmp_signed("<", count, em.iconst(S)), count, em.iconst(S))
        k = ops.x.attr("index")
        rows = b.bitcast(b.load(b.gep(em.inputs, [em.iconst(k)])), em.T.as_pointer())
        first = b.gep(rows, [b.mul(g.sample, em.iconst(D))])
        matrix = em.once_pointer(g, ops.matrix)
        b.call(kernel, [b.bitcast(result, em.T.as_pointer()), matrix, first, packed,
                        count])
    group = b.udiv(offset, em.iconst(W))
    g.buffers[n.id] = b.gep(result, [b.mul(group, em.iconst(H))])


def gemm_kernel(em, name: str, ops: Operands, H: int, D: int) -> ir.Function:
    """void kernel(T* C, T* M, T* X, T* Xt, i64 count): C <- the block's products for
    the `count` rows of X (see the module's docstring), Xt its packed rows."""
    TP = em.T.as_pointer()
    fn, kem = em.kernel_function(em.module, em.T, name, [TP, TP, TP, TP, I64],
                                      noalias=(0, 1, 2, 3))
    C, M, X, Xt, count = fn.args
    kem.W = em.W
    b = kem.b
    W = em.W
    VT = ir.VectorType(em.T, W)
    C, Xt = b.bitcast(C, VT.as_pointer()), b.bitcast(Xt, VT.as_pointer())
    pack(kem, X, Xt, count, D)
    groups = b.udiv(b.add(count, kem.iconst(W - 1)), kem.iconst(W))
    MR, NR = tile_shape(W, em.T_bytes)

    def micro(h0, c0, mr: int, nr: int):
        """C[c0 + c][h0 + a] for a < mr, c < nr: mr*nr accumulators over d."""
        accs = [[kem.alloca(VT) for _ in range(nr)] for _ in range(mr)]
        zero = kem.splat(kem.fconst(0), W)
        for row in accs:
            for acc in row:
                b.store(zero, acc)
        rows = [b.gep(M, [b.mul(b.add(h0, kem.iconst(a)), kem.iconst(ops.row_stride))])
                for a in range(mr)]
        cols = [b.gep(Xt, [b.mul(b.add(c0, kem.iconst(c)), kem.iconst(D))])
                for c in range(nr)]
        with kem.loop(D) as d:
            xs = [b.load(b.gep(col, [d]), align=8) for col in cols]
            at = b.mul(d, kem.iconst(ops.depth_stride))
            for a in range(mr):
                w = kem.splat(b.load(b.gep(rows[a], [at])), W)
                for c in range(nr):
                    acc = accs[a][c]
                    b.store(b.fadd(b.load(acc), b.fmul(w, xs[c], flags=CONTRACT),
                                   flags=CONTRACT), acc)
        for a in range(mr):
            for c in range(nr):
                at = b.add(b.mul(b.add(c0, kem.iconst(c)), kem.iconst(H)),
                           b.add(h0, kem.iconst(a)))
                b.store(b.load(accs[a][c]), b.gep(C, [at]), align=8)

    def row_of_tiles(h0, mr: int):
        full = b.udiv(groups, kem.iconst(NR))
        with kem.loop(full) as t:
            micro(h0, b.mul(t, kem.iconst(NR)), mr, NR)
        with kem.loop(groups, start=b.mul(full, kem.iconst(NR))) as c:
            micro(h0, c, mr, 1)

    if H // MR:
        with kem.loop(H // MR) as t:
            row_of_tiles(b.mul(t, kem.iconst(MR)), MR)
    if H % MR:
        row_of_tiles(kem.iconst(H - H % MR), H % MR)
    b.ret_void()
    return fn


def pack(kem, X, Xt, count, D: int) -> None:
    """Xt[c*D + d] <- lane vector of X[(cW + lane)*D + d], lane < W, for the groups of
    `count` rows; the lanes past `count` are zero."""
    b, W = kem.b, kem.W
    full = b.udiv(count, kem.iconst(W))
    with kem.loop(full) as c:
        first = b.mul(c, kem.iconst(W))
        rows = [b.gep(X, [b.mul(b.add(first, kem.iconst(lane)), kem.iconst(D))])
                for lane in range(W)]
        transpose_rows(kem, rows, D, b.gep(Xt, [b.mul(c, kem.iconst(D))]))
    left = b.sub(count, b.mul(full, kem.iconst(W)))
    with b.if_then(b.icmp_signed(">", left, kem.iconst(0))):
        last = b.gep(Xt, [b.mul(full, kem.iconst(D))])
        first = b.mul(full, kem.iconst(W))
        zero = kem.fconst(0)
        with kem.loop(D) as d:
            lanes = []
            for lane in range(W):
                live = b.icmp_signed("<", kem.iconst(lane), left)
                row = b.add(first, kem.iconst(lane))
                # (a lane past count reads row `first`, which is there, and drops it)
                src = b.select(live, row, first)
                v = b.load(b.gep(X, [b.add(b.mul(src, kem.iconst(D)), d)]))
                lanes.append(b.select(live, v, zero))
            b.store(kem.vector_of(lanes), b.gep(last, [d]), align=8)
