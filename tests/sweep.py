"""The size sweep: every code path of a compiled model against the reference interpreter.

A model family is a `.loss` template with one or more dims. For each size of its dims
the harness computes, independently of code generation,

  - each sample's loss and gradient with the reference interpreter (lossc/ir/evaluate.py,
    each op's NumPy semantics) on the graph as autodiff left it, before the passes that
    prepare it for code generation; the objective and gradient of any prefix of the
    batch follow by prefix sums;
  - the central differences of the objective of the graph as the front end built it (no
    pass at all), in random directions, against that gradient: a wrong derivative rule
    shows here, a wrong kernel in the comparisons below;

then compiles the model for each dtype and vector width asked for and compares every
way of calling it with the reference, at batch sizes around each lane, lane-group and
outer-product block boundary up to two blocks and one: `loss`, `value_and_grad` (a first
call, then the repeated call whose checks run natively), `value_and_grad_flat` on a
bound batch (again twice), a prepared call, two threads splitting the batch, and the
fused native training steps against the same steps taken in Python.

The data and parameters are float32 numbers, so the float64 reference judges the float32
code on the very same inputs. Tolerances are relative to the magnitude of what was
summed (the same sums over absolute values): a sample lost or counted twice moves a
result by about 1/B of that magnitude, far above the tolerances.

Sizes (`SIZES`): "fast", run by `make test`, covers every residue class of every tile
and lane width in play (`residue_cover`); "full", run by `make verify`, takes every
dim through 1..70, pairs around tile boundaries, and a few large sizes.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

import lossc
from lossc.compiler import compile_source, host_vector_bits
from lossc.ir.evaluate import evaluate_batch
from lossc.passes.hoist import additive_terms, fixed_name

# ----------------------------------------------------------------- model families


@dataclass(frozen=True)
class Family:
    """A model template. `ints` maps each int input to the dim bounding its values;
    `scale` is the spread of the random parameters per dim (keeps tanh and softmax away
    from saturation at any size)."""

    name: str
    dims: tuple
    source: str
    ints: dict = field(default_factory=dict)
    fan_in: str = ""           # the dim that parameters are scaled down by

    def text(self, sizes: dict) -> str:
        head = "".join(f"dim {d} = {sizes[d]}\n" for d in self.dims)
        return head + self.source


FAMILIES = {f.name: f for f in [
    Family("dot", ("D",), """
input x[D]
input y
param w[D] = normal(0, 0.3)
param b
hyper lam = 1e-3
z = dot(w, x) + b
loss = softplus(z) - y * z + lam * sum(w ^ 2)
""", fan_in="D"),
    Family("dot2", ("D",), """
input x[D]
input y
param w[D] = normal(0, 0.3)
param v[D] = normal(0, 0.3)
param b
z = dot(w, x) + b
u = dot(x, tanh(v))
loss = softplus(z) - y * z + 0.5 * u ^ 2
""", fan_in="D"),
    Family("layer", ("H", "D"), """
input x[D]
input y
param W[H, D] = normal(0, 0.3)
param c[H] = normal(0, 0.1)
param v[H] = normal(0, 0.3)
h = tanh(W @ x + c)
loss = (dot(v, h) - y) ^ 2
""", fan_in="D"),
    Family("softmax", ("K", "D"), """
input x[D]
input y: int
param W[K, D] = normal(0, 0.3)
param c[K] = normal(0, 0.1)
z = W @ x + c
loss = logsumexp(z) - z[y] + 0.1 * sum(softmax(z) * log_softmax(z))
""", ints={"y": "K"}, fan_in="D"),
    Family("vecmat", ("D", "H"), """
input x[D]
param A[D, H] = normal(0, 0.3)
param c[H] = normal(0, 0.1)
z = x @ A + c
loss = sum(sigmoid(z)) + 0.5 * norm(z)
""", fan_in="D"),
    Family("quad", ("D",), """
input x[D]
param A[D, D] = normal(0, 0.3)
param d[D] = normal(0, 0.3)
loss = dot(x, A @ x) + sum(d * x ^ 2)
""", fan_in="D"),
    Family("matinput", ("R", "C"), """
input M[R, C]
input v[C]
param p[C] = normal(0, 0.3)
param q[R] = normal(0, 0.3)
u = M @ p
loss = softplus(dot(q, u)) + 0.1 * sum(u ^ 2) + dot(q, M @ v) + max(mean(M, axis=1))
""", fan_in="C"),
    Family("gather", ("N", "F"), """
input u: int
input i: int
input t[F]
input r
param P[N, F] = normal(0, 0.3)
param Q[N, F] = normal(0, 0.3)
param a[F] = normal(0, 0.3)
e = P[N - 1 - i, F - 1] * u / N
loss = (dot(P[u], Q[i]) - r) ^ 2 + dot(a * t, P[u]) + 0.01 * sum(P[:, 0] ^ 2) + 0.1 * e
""", ints={"u": "N", "i": "N"}, fan_in="F"),
    Family("v2", ("N", "L"), """
input tok[L]: int
input x[L]
input y
param E[N, 2] = normal(0, 0.3)
param v[N] = normal(0, 0.3)
param a[L] = normal(0, 0.3)
hyper cw[2] = [1.0, 0.5]
reduce sum
def soft(t, u) = log_sigmoid(t) + xlogy(u, exp(0.5 * tanh(t)))
h = mean(E[tok], axis=0)
s = dot(a, x) + sum(v[tok]) / L
loss = -soft(s * y, x[0] ^ 2) + lgamma(2 + tanh(s)) + dot([cw[0], -cw[1]] * h, [1, 2])
penalty = 0.01 * sum(E ^ 2) + 0.1 * sum(a ^ 2)
output score = s
output hp = h
""", ints={"tok": "N"}, fan_in="L"),
    Family("rows", ("N", "F"), """
input u: int
input tok[4]: int
input y
param E[N, F] = normal(0, 0.3)
param b[N] = normal(0, 0.3)
param w[F] = normal(0, 0.3)
h = mean(E[tok], axis=0)
z = dot(E[u], h) + b[u] + dot(w, h)
loss = softplus(z) - y * z
""", ints={"u": "N", "tok": "N"}, fan_in="F"),
    Family("lsemat", ("K", "D"), """
input X[K, D]
input t[K]
param W[K, D] = normal(0, 0.3)
z = sum(W * X, axis=1)
loss = -sum(t * log_softmax(z)) + logsumexp(W * X) + sum(logsumexp(X * W, axis=0))
""", fan_in="D"),
]}

# What the families above leave out, for the full sweep (make verify) at each lane
# count's residue cover: `reduce sum` with an int input used as a number and hypers;
# matrix-matrix products with an input matrix and transposes; reductions and softmax
# along either axis of a matrix; rows, columns and elements of an input matrix chosen by
# int inputs. (Smooth, as every family: the reference is checked against central
# differences.)
MORE_FAMILIES = {f.name: f for f in [
    Family("sumred", ("D",), """
reduce sum
input x[D]
input n: int
input y
param w[D] = normal(0, 0.3)
param b
hyper lam = 0.7
z = dot(w, x) * n / D + b * n / D
loss = lam * (z - y) ^ 2 + sum(w * x * n) * 0.01 / D
""", ints={"n": "D"}, fan_in="D"),
    Family("matmat", ("K", "D"), """
input X[D, K]
param A[K, D] = normal(0, 0.3)
param B[K, K] = normal(0, 0.3)
Z = A @ X
Y = transpose(B) @ Z
loss = sum(tanh(Y)) + 0.1 * norm(Z @ A)
""", fan_in="D"),
    Family("axes", ("K", "D"), """
input X[K, D]
param W[K, D] = normal(0, 0.3)
param c[D] = normal(0, 0.3)
Z = W * X
s = sum(Z, axis=0) + c
u = sum(logsumexp(Z, axis=1)) + sum(softmax(Z, axis=0) * X)
loss = logsumexp(s) + u + norm(Z) + sum(prod(sigmoid(W), axis=0))
""", fan_in="D"),
    Family("rowcol", ("N", "D"), """
input M[N, D]
input i: int
input j: int
param p[D] = normal(0, 0.3)
param q[N] = normal(0, 0.3)
loss = dot(M[i], p) ^ 2 + dot(M[:, j], q) + sum(p @ transpose(M)) * 0.1 + M[i, j] * p[j]
""", ints={"i": "N", "j": "D"}, fan_in="D"),
]}

# ----------------------------------------------------------------- sizes

WIDTHS = (64, 128, 256, 512)
DTYPES = ("float64", "float32")


def lane_counts() -> tuple:
    """Samples per vector for every dtype and width: the lanes the kernels tile by."""
    return tuple(sorted({lanes_of(d, bits) for bits in WIDTHS for d in DTYPES}))


def lanes_of(dtype: str, bits: int) -> int:
    return max(1, bits // (64 if dtype == "float64" else 32))


def lane_features(n: int, lanes: int) -> set:
    """The decisions a vector of n elements drives in kernels over `lanes` lanes: its
    remainder, its count of whole vectors classed by the row kernels' tiles of
    ROW_TILE_VECTORS vectors (0, 1, 2, 3, then whole tiles plus 0..3), and whether
    W @ x goes along the rows (ROW_MATVEC_CHUNKS vectors or more)."""
    from lossc.passes.lower import ROW_MATVEC_CHUNKS
    from lossc.codegen.row_outer import ROW_TILE_VECTORS
    chunks = n // lanes
    cls = (chunks if chunks < ROW_TILE_VECTORS
           else ROW_TILE_VECTORS + chunks % ROW_TILE_VECTORS)
    return {("rem", n % lanes), ("chunks", cls), ("row matvec", chunks >= ROW_MATVEC_CHUNKS)}


@functools.lru_cache(maxsize=None)
def residue_cover(lanes: int, limit: int = 70) -> tuple:
    """A few sizes in 1..limit that between them show every lane_features value any
    size in 1..limit shows (greedy set cover, smaller sizes first on ties)."""
    feats = {n: lane_features(n, lanes) for n in range(1, limit + 1)}
    missing = set().union(*feats.values())
    chosen = []
    while missing:
        n = max(feats, key=lambda k: (len(feats[k] & missing), -k))
        chosen.append(n)
        missing -= feats[n]
    return tuple(sorted(chosen))


def row_tile_sizes(dtype: str, bits: int) -> list[tuple[int, int]]:
    """(rows, columns) of matrix gradients outer(u, x) at which the row kernel
    (codegen/row_outer.py) shows every decision it makes (row_tile_features) at any
    row count: for each width of its column tiles (1..ROW_TILE_VECTORS vectors),
    columns of that many vectors and a remainder (the widest, ROW_TILE_VECTORS + 1
    vectors: two strips of columns), and a few row counts chosen greedily, fewest rows
    first on ties, among those that give the kernel two tile rows and a remainder
    (ROW_TILE_ROUNDS); all of OUTER_MIN_SIZE elements or more, below which the lower
    pass leaves the gradient to per-lane sums and no row kernel runs."""
    from lossc.codegen.row_outer import ROW_TILE_VECTORS, row_tile
    from lossc.passes.lower import OUTER_MIN_SIZE
    lanes = lanes_of(dtype, bits)
    if lanes < 2:
        return []
    out = []
    for jt in range(1, ROW_TILE_VECTORS + 1):
        kt = row_tile(1 << 20, jt, lanes, 8 if dtype == "float64" else 4)[0]
        cols = jt * lanes + (jt % lanes or 1) if jt < ROW_TILE_VECTORS else \
            (ROW_TILE_VECTORS + 1) * lanes + 1
        feats = {k: row_tile_features(k, cols, dtype, bits)
                 for k in range(-(-OUTER_MIN_SIZE // cols), ROW_TILE_ROUNDS * kt + 2)}
        missing = set().union(*feats.values())
        while missing:
            k = max(feats, key=lambda k: (len(feats[k] & missing), -k))
            out.append((k, cols))
            missing -= feats[k]
    return sorted(out, key=lambda kc: (kc[1], kc[0]))


ROW_TILE_ROUNDS = 3     # row counts up to this many full tile rows and one row more


def row_tile_features(rows: int, cols: int, dtype: str, bits: int) -> set:
    """The decisions of the row kernel for a rows x cols gradient: for each tile it
    makes, its vectors, its sets of accumulators (row_outer.accumulator_sets) and
    whether it is a full tile or the last rows' remainder; whether the full tiles of a
    strip take one round of their loop or several."""
    from lossc.codegen.row_outer import accumulator_sets, row_tile
    lanes = lanes_of(dtype, bits)
    chunks = cols // lanes
    kt, jt = row_tile(rows, chunks, lanes, 8 if dtype == "float64" else 4)
    widths = ({jt} if chunks >= jt else set()) | ({chunks % jt} if chunks % jt else set())
    tiles = {("full", kt)} | ({("last rows", rows % kt)} if rows % kt else set())
    return {("tile", kind, tj, accumulator_sets(tk, tj, lanes))
            for kind, tk in tiles for tj in widths} | {("rounds", min(rows // kt, 2))}


# The widest vectors of this machine's CPU (512 bits with AVX-512, else 256), for
# which lossc compiles by default. Wider vectors than the CPU's are legal LLVM, built
# from two or four of its own: the same code from lossc, but two to three times the
# compile time (and a model's compile is most of a case's time).
NATIVE_BITS = host_vector_bits()
# (dtype, bits) of the fast sweep: one of each lane count, at the CPU's own width where
# one gives that count. Eight lanes: float64 at 512 bits with AVX-512, float32 at 256
# without; sixteen lanes are only float32 at 512 bits. (The full sweep takes every
# dtype at every width on every CPU.)
FAST_VARIANTS = (("float64", 512) if NATIVE_BITS >= 512 else ("float32", 256),
                 ("float32", 512), ("float64", 256), ("float64", 128), ("float64", 64))
# ... and of the row kernel's tiles: one of each (lanes, vector registers), so float64
# at 512 bits and float32 at 256 on every CPU (the same lanes with 32 and with AVX2's
# 16 registers: smaller tiles)
ROW_TILE_VARIANTS = FAST_VARIANTS + tuple(
    v for v in (("float64", 512), ("float32", 256)) if v not in FAST_VARIANTS)
SMALL = (1, 3, 5, 9, 2)       # the other dim of a pair, in turn, in the fast sweep


@contextlib.contextmanager
def instruction_selection(bits: int, level: str):
    """Compiles in the block, at the fast level, of code for a width wider than the
    CPU's (float32 at 512 bits without AVX-512: LLVM builds each vector from two of
    the CPU's, at two to three times the compile time) take LLVM's -O0 instruction
    selection (codegen/jit.py FAST_CODEGEN_LEVEL, which huge functions get): the same
    IR from lossc, which is what the sweep tests, in a third of the time. The full
    sweep compiles every width as a user's model is compiled."""
    if level != "fast" or bits <= NATIVE_BITS:
        yield
        return
    from lossc.codegen import jit
    saved = jit.HUGE_FUNCTION_LINES
    jit.HUGE_FUNCTION_LINES = -1        # (every function is longer)
    try:
        yield
    finally:
        jit.HUGE_FUNCTION_LINES = saved
ROW_TILE_FAMILY = "layer"     # the family whose matrix gradient takes the row kernel


def fast_configs():
    """(family, sizes, variants) of the fast sweep: for each variant's lane count, each
    family with its last dim (the one along input rows) through every other size of
    that count's residue cover, the families in turn, so that between them they take
    all of it, and the others small; and the row kernel's tiles (row_tile_sizes). The
    full sweep takes each family through every size."""
    for dtype, bits in ROW_TILE_VARIANTS:
        lanes = lanes_of(dtype, bits)
        if (dtype, bits) in FAST_VARIANTS:
            for f, fam in enumerate(FAMILIES.values()):
                for k, n in enumerate(residue_cover(lanes)):
                    if (k + f) % 2:
                        continue
                    yield fam, _cover_sizes(fam, k, n), [(dtype, bits)]
        fam = FAMILIES[ROW_TILE_FAMILY]
        for rows, cols in row_tile_sizes(dtype, bits):
            yield fam, dict(zip(fam.dims, (rows, cols))), [(dtype, bits)]


def _cover_sizes(fam: Family, k: int, n: int) -> dict:
    """The sizes of the k-th config of a family's residue cover: its last dim n, the
    others small, in turn."""
    sizes = {d: SMALL[(k + j) % len(SMALL)] for j, d in enumerate(fam.dims)}
    sizes[fam.dims[-1]] = n
    return sizes


def full_configs():
    """(family, sizes, variants) of the full sweep: every dim through 1..70 (the others
    at 9) at both native dtypes and one narrower width in turn, or at every width for a
    family of one dim; pairs around tile boundaries, each at one variant in turn; sizes
    past the unrolled reductions (UNROLL); the row kernel's tiles at every lane count;
    MORE_FAMILIES through each lane count's residue cover at every variant."""
    every = [(d, b) for d in DTYPES for b in WIDTHS]
    native = [("float64", 512), ("float32", 512)]
    narrower = [(d, b) for b in WIDTHS[:3] for d in DTYPES]
    turn = itertools.count()
    for fam in FAMILIES.values():
        for sizes in full_dim_sizes(fam):
            if len(fam.dims) == 1:
                yield fam, sizes, every
            else:
                yield fam, sizes, native + [narrower[next(turn) % len(narrower)]]
        if len(fam.dims) == 2:
            edges = (7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65)
            for pair in itertools.product(edges, repeat=2):
                yield fam, dict(zip(fam.dims, pair)), [every[next(turn) % len(every)]]
    fam = FAMILIES[ROW_TILE_FAMILY]
    for dtype, bits in every:
        for rows, cols in row_tile_sizes(dtype, bits):
            yield fam, dict(zip(fam.dims, (rows, cols))), [(dtype, bits)]
    for fam in MORE_FAMILIES.values():
        for dtype, bits in every:
            for k, n in enumerate(residue_cover(lanes_of(dtype, bits))):
                sizes = {d: SMALL[(k + j) % len(SMALL)] for j, d in enumerate(fam.dims)}
                sizes[fam.dims[-1]] = n
                yield fam, sizes, [(dtype, bits)]


def full_dim_sizes(family: Family) -> list[dict]:
    names = family.dims
    out = []
    for d in names:
        for n in range(1, 71):
            sizes = {e: 9 for e in names}
            sizes[d] = n
            if sizes not in out:
                out.append(sizes)
    for n in (127, 128, 129, 255, 256, 257):
        for d in names:
            sizes = {e: 5 for e in names}
            sizes[d] = n
            if sizes not in out:
                out.append(sizes)
    return out


def batch_sizes(lanes: int, level: str) -> tuple:
    """Around every lane, lane-group and outer-product block boundary up to two blocks
    and one (groups of two lanes' vectors, OUTER_BLOCK groups a block)."""
    from lossc.codegen.outer import OUTER_BLOCK
    group = 2 * lanes
    block = OUTER_BLOCK * group
    around = {1, 2, lanes - 1, lanes, lanes + 1, group - 1, group, group + 1,
              block - 1, block, block + 1, 2 * block + 1}
    if level == "fast":
        around = {1, lanes + 1, group - 1, group + 1, block + 1, 2 * block + 1}
    return tuple(sorted(b for b in around if b >= 1))


# ----------------------------------------------------------------- the block product
# (codegen/gemm.py: W @ x or x @ A for a block of samples as one matrix product)

# (dtype, bits) of each level; the fast level takes every size at one variant of each
# register count (32 at 512 bits, 16 below) and one size of each product at the others
BLOCK_VARIANTS = {"fast": (("float64", 512), ("float32", 256), ("float32", 512),
                           ("float64", 128)),
                  "full": tuple((d, b) for d in DTYPES for b in (128, 256, 512))}


def block_geometry(dtype: str, bits: int) -> tuple[int, int, int, int]:
    """(lanes W, micro-tile rows MR, micro-tile groups NR, samples a block S)."""
    from lossc.codegen.gemm import block_samples, tile_shape
    lanes, size = lanes_of(dtype, bits), (8 if dtype == "float64" else 4)
    return (lanes, *tile_shape(lanes, size), block_samples(lanes, size))


def block_configs(level: str) -> list:
    """(family, sizes, dtype, bits) taking the block product: for each variant,
    W @ x (the layer family) from BLOCK_MIN_OUTPUTS rows through every remainder of
    the micro-tile's MR rows, and at BLOCK_MIN_ELEMENTS with BLOCK_MIN_ROWS rows; x @ A
    (vecmat) of fewer outputs than one micro-tile up to two; each with its input's
    length through the remainders of the lanes (the packing's transposes and its
    last elements)."""
    from lossc.passes.lower import BLOCK_MIN_ELEMENTS, BLOCK_MIN_OUTPUTS, BLOCK_MIN_ROWS
    out = []
    for k, (dtype, bits) in enumerate(BLOCK_VARIANTS[level]):
        if level == "fast" and k >= 2:
            W, MR, NR, S = block_geometry(dtype, bits)
            out += [(FAMILIES["layer"], {"H": BLOCK_MIN_OUTPUTS + MR - 1, "D": 2 * W + 1},
                     dtype, bits),
                    (FAMILIES["vecmat"], {"D": 2 * W - 1, "H": MR + 1}, dtype, bits)]
            continue
        W, MR, NR, S = block_geometry(dtype, bits)
        lengths = (W, 2 * W - 1, 2 * W + 1, 3 * W + W // 2)
        for r in range(MR):
            out.append((FAMILIES["layer"], {"H": BLOCK_MIN_OUTPUTS + r,
                                            "D": lengths[r % len(lengths)]}, dtype, bits))
        out.append((FAMILIES["layer"], {"H": BLOCK_MIN_ROWS,
                                        "D": -(-BLOCK_MIN_ELEMENTS // BLOCK_MIN_ROWS)},
                    dtype, bits))
        for k, H in enumerate((1, MR - 1, MR, 2 * MR + 1)):
            out.append((FAMILIES["vecmat"], {"D": lengths[k], "H": H}, dtype, bits))
    return out


def block_batch_sizes(dtype: str, bits: int, level: str) -> tuple:
    """Batch sizes around the block product's boundaries: one sample; a whole block
    (S samples: BLOCK_TILES tiles of NR lane groups); a block and then one tile, two
    groups of their own and a last group of one sample; at the full level, around
    every one of these."""
    W, MR, NR, S = block_geometry(dtype, bits)
    around = {1, S, S + NR * W + W + 1}
    if level == "full":
        around |= {2, W - 1, W, W + 1, NR * W - 1, NR * W, NR * W + 1, S - 1, S + 1,
                   2 * S + 1}
    return tuple(sorted(b for b in around if b >= 1))


# ------------------------------------------------------- the row kernel's short blocks
# (codegen/outer.py row_block: wide input rows make a block of fewer lane groups)

# dot's model with a per-sample gradient of GROUPED_GRADIENT_SIZE elements besides:
# its iterations take two lane groups, and pass a block of an odd count by one
PAIRED_DOT = Family("dotpair", ("D",), """
dim A = 16
input x[D]
input y
param w[D] = normal(0, 0.3)
param a[A] = normal(0, 0.3)
param b
z = dot(w, x) + b
loss = softplus(z) - y * z + y * sum(a ^ 2)
""", fan_in="D")
ROW_BLOCK_CASES = ((FAMILIES["dot"], {"D": 1024}), (FAMILIES["dot"], {"D": 1500}),
                   (FAMILIES["dot2"], {"D": 2056}), (FAMILIES["layer"], {"H": 3, "D": 1024}),
                   (PAIRED_DOT, {"D": 600}), (PAIRED_DOT, {"D": 350}))
ROW_BLOCK_VARIANTS = (("float64", 512), ("float32", 512), ("float64", 256))


def row_block_of(family: Family, sizes: dict, dtype: str, bits: int) -> int:
    """The lane groups of a block of the family's row kernel at these sizes."""
    from lossc.codegen.outer import row_block
    K = sizes.get("H", 1)
    return row_block(K, sizes["D"], lanes_of(dtype, bits),
                     8 if dtype == "float64" else 4)


def row_block_configs() -> list:
    """(family, sizes, dtype, bits): input rows wide enough for blocks of fewer lane
    groups than OUTER_BLOCK (one to six), at each variant where they are."""
    from lossc.codegen.outer import OUTER_BLOCK
    return [(fam, sizes, dtype, bits) for fam, sizes in ROW_BLOCK_CASES
            for dtype, bits in ROW_BLOCK_VARIANTS
            if row_block_of(fam, sizes, dtype, bits) < OUTER_BLOCK]


def flush_counts(source: str, dtype: str, bits: int) -> set:
    """The lane-group counts at which the model function's vector loop adds a staged
    block (codegen/outer.py flush): the constants its IR compares the count with."""
    from lossc.codegen.units import VALUE_AND_GRAD
    from lossc.compiler import compile_source
    lines = compile_source(source, None, dtype).unit_ir((VALUE_AND_GRAD,), bits)[0] \
        .splitlines()
    counts = set()
    for line, after in zip(lines, lines[1:]):
        if 'load i64, i64* %"outer_slot"' in line and "icmp sge i64" in after:
            counts.add(int(after.rsplit(",", 1)[1]))
    return counts


def row_block_batch_sizes(block: int, lanes: int) -> tuple:
    """One sample; around one block, two and a part; an odd group count past them."""
    n = block * lanes
    return tuple(sorted({1, n - 1, n, n + 1, 2 * n + lanes + 1, 3 * n + 1} - {0}))


DERIVATIVE_SAMPLES = 13   # the batch the reference's derivatives are checked on


def samples_for(variants, level: str, batches: tuple = ()) -> int:
    """The samples a reference needs for check_calls (and the fused steps, and the
    second-order checks, which take fewer) at these (dtype, bits) variants, or at the
    batch sizes `batches`: the largest batch size, and DERIVATIVE_SAMPLES."""
    return max(DERIVATIVE_SAMPLES, *batches,
               *(batch_sizes(lanes_of(d, b), level)[-1] for d, b in variants))


MAX_BATCH = max(batch_sizes(16, "full")[-1],
                *(block_batch_sizes(d, b, "full")[-1] for d, b in BLOCK_VARIANTS["full"]))

# ----------------------------------------------------------------- the reference


def f32(a):
    """Numbers exactly representable in float32, as float64."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


@dataclass
class Reference:
    """A family at one size: its source, the data, parameters and hypers every compiled
    variant is run on, and the per-sample loss and gradient prefix sums."""

    family: Family
    sizes: dict
    source: str
    theta: dict
    data: dict
    hypers: dict
    reduce: str
    prefix: dict          # output -> cumulative sum over samples, shape (B + 1, *shape)
    magnitude: dict       # output -> cumulative sum of absolute values, likewise
    fixed: dict           # loss, grad.<p> -> the penalty's part, added once
    predictions: dict     # output name -> its value per sample, (B, *shape)

    def expected(self, name: str, B: int):
        """(value, magnitude) of an output's objective over the first B samples."""
        total, size = self.prefix[name][B], self.magnitude[name][B]
        if self.reduce == "mean":
            total, size = total / B, size / B
        fixed = self.fixed.get(name, 0.0)
        return total + fixed, size + np.abs(fixed)

    def batch(self, B: int) -> dict:
        return {k: v[:B] for k, v in self.data.items()}


def make_data(family: Family, sizes: dict, model_inputs, B: int, rng) -> dict:
    data = {}
    for spec in model_inputs:
        if spec.is_int:
            data[spec.name] = rng.integers(0, sizes[family.ints[spec.name]],
                                           size=(B,) + spec.shape)
        else:
            data[spec.name] = f32(rng.normal(size=(B,) + spec.shape))
    return data


def make_params(family: Family, sizes: dict, params, rng) -> dict:
    scale = 1.0 / np.sqrt(sizes.get(family.fan_in, 1)) if family.fan_in else 1.0
    return {p.name: f32(rng.normal(size=p.shape) * (0.3 + 0.7 * scale) * scale ** 0.5)
            for p in params}


def reference(family: Family, sizes: dict, B: int = MAX_BATCH, seed: int = 0) -> Reference:
    src = family.text(sizes)
    c = compile_source(src)
    graph = c.stages["autodiff"]
    rng = np.random.default_rng(seed + sum(sizes.values()))
    theta = make_params(family, sizes, graph.params, rng)
    data = make_data(family, sizes, graph.inputs, B, rng)
    hypers = {h.name: h.default for h in graph.hypers}
    # a sample's loss and each gradient element are judged on the size of the terms
    # they add up, not on the sum alone: terms of order 1 can cancel to 4e-4 (matinput
    # at R = 5, C = 19), and b's gradient y - y sech^2(b y) of tanh(-b y) + b y to 5e-5
    # of |y|, whose float32 rounding error is of the terms' size. (The terms: hoisting's
    # split with every sum opened.)
    vary = {n.id for n in graph.nodes}
    terms = {name: [t for _, t in additive_terms(node, vary)]
             for name, node in graph.outputs.items()
             if name == "loss" or (name.startswith("grad.") and fixed_name(name) is None)}
    outputs = dict(graph.outputs)
    graph.outputs.update({f"term.{k}.{name}": t for name, ts in terms.items()
                          for k, t in enumerate(ts)})
    try:
        per_sample = evaluate_batch(graph, theta, data, hypers)
    finally:
        graph.outputs = outputs
    size = {name: sum(_per_sample_abs(per_sample.pop(f"term.{k}.{name}"),
                                      graph.outputs[name].shape)
                      for k in range(len(ts)))
            for name, ts in terms.items()}
    return Reference(family, sizes, src, theta, data, hypers, graph.reduce,
                     *prefix_sums(per_sample, size))


def _per_sample_abs(v, shape: tuple) -> np.ndarray:
    """|v| of a term evaluated per sample, (B, *term shape), as (B, *shape): a term of
    fewer axes than its sum (a scalar added to a vector) broadcasts along them."""
    v = np.abs(np.asarray(v, dtype=np.float64))
    v = v.reshape(v.shape[:1] + (1,) * (len(shape) - (v.ndim - 1)) + v.shape[1:])
    return np.broadcast_to(v, v.shape[:1] + tuple(shape))


def prefix_sums(per_sample: dict, sizes: dict | None = None
                ) -> tuple[dict, dict, dict, dict]:
    """Each output's cumulative sums over the samples and those of its absolute values
    (or of its size per sample in `sizes`, where given); the penalty's part of the loss
    and gradient (the same in every row, added once); the declared outputs' values per
    sample."""
    prefix, magnitude, fixed, predictions = {}, {}, {}, {}
    for k, v in per_sample.items():
        v = np.asarray(v, dtype=np.float64)
        if k.startswith("out."):
            predictions[k[4:]] = v
            continue
        if fixed_name(k) is not None:       # a penalty's part: the same in every row
            fixed[fixed_name(k)[:-len(".fixed")]] = v[0]
            continue
        zero = np.zeros((1,) + v.shape[1:])
        prefix[k] = np.concatenate([zero, np.cumsum(v, axis=0)])
        size = np.abs(v) if k not in (sizes or {}) else np.asarray(sizes[k], np.float64)
        magnitude[k] = np.concatenate([zero, np.cumsum(size, axis=0)])
    return prefix, magnitude, fixed, predictions


def check_derivatives(ref: Reference, B: int = DERIVATIVE_SAMPLES, directions: int = 2,
                      seed: int = 1):
    """The gradient the reference computes (autodiff's graph) against central
    differences of the objective of the unoptimized front-end graph, in random
    directions; Richardson's extrapolation of two steps cancels the h^2 error."""
    from lossc.compiler import front_end, read_source
    built, _ = front_end(read_source(ref.source))
    data = ref.batch(B)

    parts = ["loss"] + (["penalty"] if "penalty" in built.outputs else [])

    def objective(theta):
        v = evaluate_batch(built, theta, data, ref.hypers, parts)
        total = float(np.sum(v["loss"])) if ref.reduce == "sum" else float(np.mean(v["loss"]))
        return total + (float(v["penalty"][0]) if "penalty" in v else 0.0)

    rng = np.random.default_rng(seed)
    for _ in range(directions):
        d = {k: rng.normal(size=np.shape(v)) for k, v in ref.theta.items()}
        analytic = sum(float(np.sum(ref.expected(f"grad.{k}", B)[0] * d[k])) for k in d)
        scale = sum(float(np.sum(ref.expected(f"grad.{k}", B)[1] * np.abs(d[k]))) for k in d)

        def diff(h):
            up = {k: v + h * d[k] for k, v in ref.theta.items()}
            down = {k: v - h * d[k] for k, v in ref.theta.items()}
            return (objective(up) - objective(down)) / (2 * h)

        h = 1e-3
        numeric = (4 * diff(h / 2) - diff(h)) / 3
        assert abs(numeric - analytic) <= 1e-6 * (scale + abs(analytic)) + 1e-9, \
            (ref.family.name, ref.sizes, numeric, analytic)


# ----------------------------------------------------------------- the comparisons

TOLERANCE = {"float64": 1e-10, "float32": 2e-4}
# An element is judged on its own magnitude (the sum over samples of its terms' absolute
# values), but on no less than this share of the output's largest: within one sample an
# element can be a product with a sum that all but cancels (a tanh unit's input summed
# over 63 features, 1e-3 of its terms' size), whose float32 rounding error is of the
# terms' size, not of the element's (the full sweep's layer at D = 63: 6e-7 on an
# element of 1.2e-3, beside elements of 2.4)
FLOOR = {"float64": 1e-3, "float32": 1e-2}


class Mismatch(AssertionError):
    pass


def compare(what: str, got, want, magnitude, dtype: str, context: str,
            tolerance: dict = TOLERANCE) -> None:
    got = np.asarray(got, dtype=np.float64)
    scale = np.maximum(np.asarray(magnitude, dtype=np.float64), 0)
    # each element against its own magnitude, and no less than a share of the largest
    # (FLOOR: an element whose terms all but vanish is judged on the output's scale)
    floor = FLOOR[dtype] * float(np.max(scale)) if np.size(scale) else 0.0
    err = np.abs(got - want)
    bad = err > tolerance[dtype] * (np.maximum(scale, floor) + 1e-30)
    if np.shape(got) != np.shape(want) or np.any(bad) or not np.all(np.isfinite(got)):
        where = np.argwhere(bad)[:3].tolist() if np.ndim(bad) else []
        raise Mismatch(f"{context}: {what} differs: max error {np.max(err):.3g} at "
                       f"{where} (magnitude {np.max(scale):.3g}, tolerance "
                       f"{tolerance[dtype]:g} relative)")


def at_width(bits: int) -> lossc.Options:
    """The options of this run (the environment's), at the vector width `bits`."""
    return dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)


def compiled(ref: Reference, dtype: str, bits: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lossc.LosscWarning)   # (unused random bindings)
        return lossc.compile(ref.source, dtype=dtype, cache=False, options=at_width(bits))


def check_calls(ref: Reference, m, dtype: str, bits: int, level: str,
                threads: tuple = (1, 2), batches: tuple = (), loss_unit: bool = True) -> int:
    """Every call path of `m` at every batch size (batch_sizes, or `batches`) against
    the reference (the objective's own code unit, loss and loss_flat, with
    `loss_unit`); returns the number of comparisons made. Two threads split a batch
    from 2 * min_samples_per_thread samples (lowered here so that small batches take
    the threaded path)."""
    checks = 0
    names = [p.name for p in m.params]
    for B in batches or batch_sizes(lanes_of(dtype, bits), level):
        context = f"{ref.family.name} {ref.sizes} {dtype} {bits}-bit B={B}"
        data = ref.batch(B)
        want_loss, mag_loss = ref.expected("loss", B)

        def grads_match(label, grads):
            for name in names:
                want, mag = ref.expected(f"grad.{name}", B)
                compare(f"{label} grad.{name}", grads[name], want, mag, dtype, context)

        # a row-sparse parameter's touched rows (value_and_sparse_grad), made dense
        if m.sparse_rows:
            value, grads = m.value_and_sparse_grad(ref.theta, **data)
            compare("value_and_sparse_grad objective", value, want_loss, mag_loss, dtype,
                    context)
            grads_match("value_and_sparse_grad", {
                k: g.to_dense() if isinstance(g, lossc.SparseRows) else g
                for k, g in grads.items()})
            checks += 1
        # value_and_grad: the first call (checked), then the repeated ones
        for call in range(3):
            value, grads = m.value_and_grad(ref.theta, **data)
            compare(f"value_and_grad#{call} objective", value, want_loss, mag_loss, dtype,
                    context)
            grads_match(f"value_and_grad#{call}", grads)
        if loss_unit:
            compare("loss", m.loss(ref.theta, **data), want_loss, mag_loss, dtype, context)
        if m.outputs:
            predicted = m.predict(ref.theta, **data)
            for name, want in ref.predictions.items():
                compare(f"predict {name}", predicted[name], want[:B], np.abs(want[:B]),
                        dtype, context)
            checks += 1
        # the flat calls on a bound batch, and a prepared call
        flat = m.pack_params(ref.theta)
        bound = m.bind(data)
        for call in range(2):
            g = np.empty(m.n_params, dtype=m.dtype)
            value, g = m.value_and_grad_flat(flat, bound, grad_out=g)
            compare(f"value_and_grad_flat#{call} objective", value, want_loss, mag_loss,
                    dtype, context)
            grads_match(f"value_and_grad_flat#{call}", m.unpack_params(g))
        if loss_unit:
            compare("loss_flat", m.loss_flat(flat, bound), want_loss, mag_loss, dtype,
                    context)
        g = np.zeros(m.n_params, dtype=m.dtype)
        call = m.prepare(flat.copy(), bound, grad_out=g)
        compare("prepared objective", call(), want_loss, mag_loss, dtype, context)
        grads_match("prepared", m.unpack_params(g))
        checks += 10
        if 2 in threads and B >= 4:
            m.set_threads(2, min_samples_per_thread=2)
            try:
                value, grads = m.value_and_grad(ref.theta, **data)
                compare("2 threads objective", value, want_loss, mag_loss, dtype, context)
                grads_match("2 threads", grads)
                if m.sparse_rows:
                    _, sparse = m.value_and_sparse_grad(ref.theta, **data)
                    grads_match("2 threads sparse", {
                        k: g.to_dense() if isinstance(g, lossc.SparseRows) else g
                        for k, g in sparse.items()})
                if loss_unit:
                    compare("2 threads loss", m.loss(ref.theta, **data), want_loss,
                            mag_loss, dtype, context)
            finally:
                m.set_threads(1)
            checks += 2
    return checks


def checks_loss_unit(family: Family, sizes: dict, dtype: str, bits: int,
                     level: str) -> bool:
    """Whether a call-path test compiles and checks the objective's own code unit
    (loss, loss_flat): always at the full level; at the fast level at every other size
    of each lane count's residue cover (the first, third, ...) and at every size
    outside it (the row kernel's tiles), each family at each lane count four times or
    more. The unit is the gradient's forward part, emitted by the same code in
    the same sample loop, which every fast size checks; compiling it is a quarter of a
    call-path test."""
    if level != "fast":
        return True
    cover = residue_cover(lanes_of(dtype, bits))
    n = sizes[family.dims[-1]]
    return n not in cover or cover.index(n) % 2 == 0


def check_fused_steps(ref: Reference, m, dtype: str, batch_size: int, epochs: int = 2):
    """The fused native training steps (gather, gradient, update in one native call)
    against the same steps taken in Python through value_and_grad_flat: bit for bit in
    float64, within rounding in float32; SGD with momentum and Adam, and for a model
    with row-sparse parameters SGD (touched rows only) and lazy Adam (against
    Adam(lazy=True) stepping on value_and_sparse_grad's gradients)."""
    from lossc.optim.optimizers import SGD, Adam
    from lossc.runtime.calls import BoundArgs
    from lossc.runtime.fused import FusedSteps
    N = min(len(next(iter(ref.data.values()))), 3 * batch_size + 5)
    bound = m.bind(ref.batch(N))
    theta0 = m.pack_params(ref.theta)
    rng = np.random.default_rng(N)
    makes = [lambda: SGD(0.05, momentum=0.5), lambda: Adam(0.01)]
    if m.sparse_rows:
        makes += [lambda: SGD(0.05), lambda: Adam(0.01, lazy=True)]
    for make in makes:
        o1, o2 = make(), make()
        p1, p2 = theta0.copy(), theta0.copy()
        fused = FusedSteps(m, o2, bound, batch_size)
        g = np.empty(m.n_params, dtype=m.dtype)
        for _ in range(epochs):
            order = rng.permutation(N).astype(np.int64)
            for lo in range(0, N, batch_size):
                idx = order[lo:lo + batch_size]
                if getattr(o1, "lazy", False):
                    params = m.unpack_params(p1)
                    _, grads = m.value_and_sparse_grad(params, **{
                        s.name: a[idx] for s, a in zip(m.inputs, bound.arrays)})
                    o1.step(params, grads)
                    p1[...] = m.pack_params(params)
                    continue
                batch = BoundArgs(m, [a[idx] for a in bound.arrays], len(idx), bound.hypers)
                m.value_and_grad_flat(p1, batch, grad_out=g)
                o1.step(p1, g)
            fused.run(p2, order, 0, -(-N // batch_size))
        fused.sync()
        context = (f"{ref.family.name} {ref.sizes} {dtype} fused {type(o1).__name__} "
                   f"batch {batch_size} of {N}")
        if dtype == "float64":
            if not np.array_equal(p1, p2):
                raise Mismatch(f"{context}: parameters differ by up to "
                               f"{np.max(np.abs(p1 - p2)):.3g}")
        else:
            compare("parameters", p2, p1, np.abs(p1) + 1e-2, dtype, context)


# ----------------------------------------------------------------- second order
# Model.jvp and Model.hvp (forward mode, runtime/derivatives.py) against the reference
# interpreter on the graph forward mode builds over autodiff's, before any other pass;
# that reference's Hessian-vector product against central differences of the
# reference gradient.

# (looser than TOLERANCE: a tangent's per-sample terms cancel more than the gradient's,
# and the float32 objective of the jvp's code rounds otherwise than the gradient's)
SECOND_ORDER_TOLERANCE = {"float64": 1e-9, "float32": 2e-3}


SECOND_ORDER_STRIDE = 2   # the fast level's second-order checks: one size in this many


def second_order_configs(level: str = "fast"):
    """(family, sizes, dtype) of jvp and hvp, each compiled at the CPU's own width
    (NATIVE_BITS). The full level: each family with its last dim through float64's
    residue cover at that width, in both dtypes. The fast level: each dtype's own fast
    configs at that width (their last dim through half the dtype's residue cover),
    every SECOND_ORDER_STRIDE-th of them, each pair of families and each dtype starting
    at the next in turn, so that the families between them take the whole cover in each
    dtype; the call-path
    tests of those configs check them on the model they compiled (test_sweep.py).
    Forward mode takes the gradient's code paths, which the calls' sweep takes at every
    size in each dtype: here each family meets both dtypes and each lane count's
    residues."""
    def native_configs(dtype):
        native = (dtype, NATIVE_BITS)
        cover = residue_cover(lanes_of(*native))
        return [(fam, sizes) for fam, sizes, variants in fast_configs()
                if variants == [native] and sizes[fam.dims[-1]] in cover
                and all(sizes[d] in SMALL for d in fam.dims[:-1])]
    if level == "full":
        return [(fam, _cover_sizes(fam, k, n), d) for fam in FAMILIES.values()
                for k, n in enumerate(residue_cover(lanes_of("float64", NATIVE_BITS)))
                for d in DTYPES]
    out = []
    for turn, dtype in enumerate(DTYPES):
        configs = native_configs(dtype)
        families = list(dict.fromkeys(fam.name for fam, _ in configs))
        position = collections.Counter()
        for fam, sizes in configs:
            k = position[fam.name]
            position[fam.name] += 1
            if (k + turn + families.index(fam.name) // 2) % SECOND_ORDER_STRIDE == 0:
                out.append((fam, sizes, dtype))
    return out


def checks_second_order(family: Family, sizes: dict, dtype: str, bits: int,
                        level: str) -> bool:
    """Whether a call-path test of the fast level checks jvp and hvp too (the fast
    level's second_order_configs)."""
    return level == "fast" and bits == NATIVE_BITS and any(
        fam is family and s == sizes and d == dtype
        for fam, s, d in _fast_second_order())


@functools.lru_cache(maxsize=None)
def _fast_second_order() -> tuple:
    return tuple(second_order_configs("fast"))


def directional_reference(ref: Reference, seed: int = 2) -> tuple[dict, Reference]:
    """(a random direction, a Reference whose outputs are tangent.loss, the directional
    derivative, and tangent.grad.<p>, the Hessian times the direction)."""
    from lossc.passes.forward import forward
    graph = forward(compile_source(ref.source).stages["autodiff"])
    rng = np.random.default_rng(seed + sum(ref.sizes.values()))
    tangent = {k: f32(rng.normal(size=np.shape(v))) for k, v in ref.theta.items()}
    theta = {**ref.theta, **{f"tangent.{k}": v for k, v in tangent.items()}}
    names = ["tangent.loss"] + [f"tangent.grad.{k}" for k in ref.theta]
    if "penalty" in graph.outputs:
        names += ["tangent.penalty"] + [f"tangent.penalty_grad.{k}" for k in ref.theta]
    prefix, magnitude, fixed, _ = prefix_sums(evaluate_batch(graph, theta, ref.data,
                                                             ref.hypers, names))
    return tangent, dataclasses.replace(ref, prefix=prefix, magnitude=magnitude,
                                        fixed=fixed)


def check_second_derivatives(ref: Reference, tangent: dict, dref: Reference,
                             B: int = DERIVATIVE_SAMPLES):
    """The reference H v against central differences of the reference gradient (the
    graph autodiff leaves, evaluated at theta +- h v), Richardson-extrapolated."""
    graph = compile_source(ref.source).stages["autodiff"]
    data = ref.batch(B)

    penalty = "penalty" in graph.outputs

    def gradient(h):
        """The objective's gradient at theta + h v: the reduced per-sample gradients,
        and a penalty's gradient once."""
        theta = {k: v + h * tangent[k] for k, v in ref.theta.items()}
        names = [f"grad.{k}" for k in theta] + \
            ([f"penalty_grad.{k}" for k in theta] if penalty else [])
        out = evaluate_batch(graph, theta, data, ref.hypers, names)
        return {f"grad.{k}": (np.sum if ref.reduce == "sum" else np.mean)(out[f"grad.{k}"],
                                                                         axis=0)
                + (out[f"penalty_grad.{k}"][0] if penalty else 0.0) for k in theta}

    def diff(h):
        up, down = gradient(h), gradient(-h)
        return {k: (up[k] - down[k]) / (2 * h) for k in up}

    h = 1e-3
    half, whole = diff(h / 2), diff(h)
    for k in ref.theta:
        numeric = (4 * half[f"grad.{k}"] - whole[f"grad.{k}"]) / 3
        analytic, scale = dref.expected(f"tangent.grad.{k}", B)
        ok = np.abs(numeric - analytic) <= 1e-6 * (scale + np.abs(analytic)) + 1e-9
        assert np.all(ok), (ref.family.name, ref.sizes, k, numeric, analytic)


def check_jvp_and_hvp(ref: Reference, m, dtype: str, level: str) -> None:
    """jvp and hvp of m (compiled at the CPU's own width) against the reference
    interpreter's forward mode, that against central differences of the gradient."""
    tangent, dref = directional_reference(ref)
    check_second_derivatives(ref, tangent, dref)
    check_directional(ref, tangent, dref, m, dtype, NATIVE_BITS, level)


def check_directional(ref: Reference, tangent: dict, dref: Reference, m, dtype: str,
                      bits: int, level: str) -> None:
    """m.jvp and m.hvp at the batch sizes of check_calls against the references."""
    for B in batch_sizes(lanes_of(dtype, bits), level):
        context = f"{ref.family.name} {ref.sizes} {dtype} {bits}-bit B={B}"
        data = ref.batch(B)
        value, dval = m.jvp(ref.theta, tangent, **data)
        compare("jvp objective", value, *ref.expected("loss", B), dtype, context,
                SECOND_ORDER_TOLERANCE)
        compare("jvp", dval, *dref.expected("tangent.loss", B), dtype, context,
                SECOND_ORDER_TOLERANCE)
        hv = m.hvp(ref.theta, tangent, **data)
        expected = {name: dref.expected(f"tangent.grad.{name}", B) for name in ref.theta}
        # float32 is judged normwise, on the whole product's largest magnitude: the
        # terms of one parameter's part can cancel far below the float32 rounding of
        # the second derivatives they are made of (v2's v at N = L = 1: 7e-4 out of
        # terms of order 1, beside the 0.13 of a's part)
        whole = max(float(np.max(mag, initial=0.0)) for _, mag in expected.values())
        for name, (want, mag) in expected.items():
            if dtype == "float32":
                mag = np.maximum(mag, whole)
            compare(f"hvp {name}", hv[name], want, mag, dtype, context,
                    SECOND_ORDER_TOLERANCE)


# ----------------------------------------------------------------- random programs

SMOOTH_UNARY = ("tanh({})", "sin({})", "sigmoid({})", "softplus({})", "log1p({} ^ 2)",
                "erfc({})", "log_sigmoid({})", "lgamma(1 + {} ^ 2)",
                "sqrt({} ^ 2 + 1)", "exp(tanh({}))", "atan({})", "erf({})", "cos({})",
                "square({})", "-{}", "({}) ^ 3", "log(sigmoid({}))", "expm1(tanh({}))")
KINKED_UNARY = ("abs({})", "relu({})")
SMOOTH_BINARY = ("{} + {}", "{} - {}", "{} * {}", "{} / (1 + {} ^ 2)",
                 "atan2({}, 1 + {} ^ 2)")
KINKED_BINARY = ("max({}, {})", "min({}, {})", "where({} > {}, {}, 0.5 * {})")
REDUCTIONS = ("sum({})", "mean({})", "logsumexp({})", "norm({} + 0.5)")
KINKED_REDUCTIONS = ("max({})", "min({})")


RANDOM_SIZES = {"fast": (1, 2, 3, 5, 7, 8, 9),
                "full": (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33, 40)}


def random_program(seed: int, smooth: bool, level: str = "full") -> tuple[str, dict]:
    """A random, valid `.loss` program: dims of random sizes, vector and matrix inputs
    and parameters, an int input used as an index, and bindings drawn from elementwise
    functions, broadcasting arithmetic, reductions (with axes), products (dot, @,
    outer), softmax, indexing and slices; the loss sums reductions of the last few.
    Returns the source and the int inputs' bounds (the dim each indexes). With smooth,
    no op with a kink (max, min, abs, relu, where), so finite differences and float32
    agree with the reference anywhere."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.choice(RANDOM_SIZES[level])) for _ in range(3)]
    dims = dict(zip("ABC", sizes))
    lines = [f"dim {k} = {v}" for k, v in dims.items()]
    pool = []            # (expression, shape, per-sample)

    def declare(kind, name, shape):
        dims_text = f"[{', '.join(shape)}]" if shape else ""
        init = " = normal(0, 0.4)" if kind == "param" else ""
        lines.append(f"{kind} {name}{dims_text}{init}")
        pool.append((name, tuple(dims[d] for d in shape), kind == "input"))

    declare("input", "x", ["A"])
    declare("input", "y", [])
    declare("input", "M", ["B", "A"])
    lines.append("input k: int")
    declare("param", "w", ["A"])
    declare("param", "W", ["C", "A"])
    declare("param", "V", ["B", "C"])
    declare("param", "b", [])
    unary = SMOOTH_UNARY + (() if smooth else KINKED_UNARY)
    binary = SMOOTH_BINARY + (() if smooth else KINKED_BINARY)
    reductions = REDUCTIONS + (() if smooth else KINKED_REDUCTIONS)

    used = set()

    def pick(pred=lambda e: True):
        options = [e for e in pool if pred(e)]
        # mostly a recent value, so that bindings chain into deep expressions
        recent = options[-3:] if rng.random() < 0.6 else options
        return recent[int(rng.integers(len(recent)))]

    def bind(expr, shape, per):
        name = f"t{len(pool)}"
        used.update(e[0] for e in pool if re.search(rf"\b{e[0]}\b", expr))
        lines.append(f"{name} = {expr}")
        pool.append((name, shape, per))

    for _ in range(int(rng.integers(6, 14))):
        kind = rng.random()
        a = pick()
        if kind < 0.25:
            bind(rng.choice(unary).format(a[0]), a[1], a[2])
        elif kind < 0.45:
            # broadcasting partners: same shape, a scalar, or a row of a matrix
            b = pick(lambda e: e[1] == a[1] or e[1] == () or
                     (len(a[1]) == 2 and e[1] == a[1][1:]))
            form = rng.choice(binary)
            args = [a[0], b[0]] + ([b[0], a[0]] if form.count("{}") == 4 else [])
            bind(form.format(*args[:form.count("{}")]), a[1], a[2] or b[2])
        elif kind < 0.6 and a[1]:
            if len(a[1]) == 2 and rng.random() < 0.5:
                axis = int(rng.integers(2))
                form = rng.choice(("sum({}, axis={})", "mean({}, axis={})",
                                   "logsumexp({}, axis={})"))
                bind(form.format(a[0], axis), (a[1][1 - axis],), a[2])
            else:
                bind(rng.choice(reductions).format(a[0]), (), a[2])
        elif kind < 0.75:
            # products: dot of vectors, matrix @ vector, vector @ matrix, outer
            vecs = [e for e in pool if len(e[1]) == 1]
            mats = [e for e in pool if len(e[1]) == 2]
            v = vecs[int(rng.integers(len(vecs)))]
            same = [e for e in vecs if e[1] == v[1]]
            fit = [e for e in mats if e[1][1] == v[1][0]]
            left = [e for e in mats if e[1][0] == v[1][0]]
            choice = rng.random()
            if choice < 0.3:
                u = same[int(rng.integers(len(same)))]
                bind(f"dot({u[0]}, {v[0]})", (), u[2] or v[2])
            elif choice < 0.6 and fit:
                m = fit[int(rng.integers(len(fit)))]
                bind(f"{m[0]} @ {v[0]}", (m[1][0],), m[2] or v[2])
            elif choice < 0.85 and left:
                m = left[int(rng.integers(len(left)))]
                bind(f"{v[0]} @ {m[0]}", (m[1][1],), m[2] or v[2])
            else:
                u = vecs[int(rng.integers(len(vecs)))]
                if u[1][0] * v[1][0] <= 600:
                    bind(f"outer({u[0]}, {v[0]})", (u[1][0], v[1][0]), u[2] or v[2])
        elif kind < 0.85 and len(a[1]) == 1:
            if rng.random() < 0.5:
                bind(f"{rng.choice(('softmax', 'log_softmax'))}({a[0]})", a[1], a[2])
            else:
                n = a[1][0]
                if n >= 2:
                    bind(f"{a[0]}[1:] * 0.5 + {a[0]}[:{n - 1}]", (n - 1,), a[2])
        elif a[1]:
            # an element chosen by the int input (k < A), or a fixed one
            if a[1][0] == dims["A"]:
                bind(f"{a[0]}[k]", a[1][1:], True)
            else:
                bind(f"{a[0]}[-1]", a[1][1:], a[2])
    # the loss: every binding no other binding uses, and the parameters
    terms = []
    for name, shape, per in [e for e in pool[7:] if e[0] not in used] + [
            ("w", (1,), False), ("W", (1, 1), False)]:
        terms.append(f"sum(tanh({name}))" if shape else f"tanh({name})")
    terms.append("0.1 * sum(V ^ 2) + b * y")
    lines.append("loss = " + " + ".join(terms))
    return "\n".join(lines) + "\n", {"k": "A"}


def random_family(seed: int, smooth: bool, level: str = "full") -> tuple[Family, dict]:
    source, ints = random_program(seed, smooth, level)
    head = [ln for ln in source.splitlines() if ln.startswith("dim ")]
    sizes = {ln.split()[1]: int(ln.split()[3]) for ln in head}
    body = "\n".join(ln for ln in source.splitlines() if not ln.startswith("dim ")) + "\n"
    kind = "smooth" if smooth else "kinked"
    return Family(f"random-{kind}-{seed}", tuple(sizes), body, ints=ints), sizes


# ----------------------------------------------------------------- lowered against plain

FUSIONS = ("row_dot", "row_matvec", "block_matmul", "outer_grad.rows", "outer_grad.block",
           "logsumexp_softmax", "exp_neg_abs", "row_scatter")


def fusions(graph) -> set:
    """The fusions of the lower pass (passes/lower.py) in a lowered graph."""
    found = {f"{n.op}.{n.attr('kind')}" if n.op == "outer_grad" else n.op
             for n in graph.nodes}
    return found & set(FUSIONS)


def lowered_graph(source: str, dtype: str, bits: int):
    """(plain graph, the gradient function's graph lowered for dtype and width)."""
    from lossc.codegen.units import lowered
    from lossc.passes import Target
    plain = compile_source(source).graph
    return plain, lowered(plain, True, Target.of(dtype, bits))


@functools.lru_cache(maxsize=None)
def lowered_configs(level: str) -> list:
    """(family, sizes, dtype, bits) at which the lowered code is compared with the
    plain code: at the fast level, for each family and variant of the fast sweep, the
    first sizes (of the fast sweep's) showing each fusion not shown before; at the full
    level, every size and variant of the full sweep's at which the lower pass changes
    anything."""
    configs = fast_configs() if level == "fast" else full_configs()
    chosen, seen = [], set()
    for fam, sizes, variants in configs:
        for dtype, bits in variants:
            found = fusions(lowered_graph(fam.text(sizes), dtype, bits)[1])
            new = {(fam.name, dtype, bits, f) for f in found} - seen
            if new if level == "fast" else found:
                chosen.append((fam, sizes, dtype, bits))
                seen |= new
    return chosen


def check_lowered_against_plain(ref: Reference, dtype: str, bits: int, level: str,
                                batches: tuple = ()) -> set:
    """The code with the lower pass's fused kernels against the plain code (codegen's
    plain mode: no fusion) and both against the reference, at every batch size
    (batch_sizes, or `batches`); and the reference interpreter on the lowered graph
    against the plain graph's. Returns the fusions compared."""
    from lossc.api import compile_graph
    plain_graph, low = lowered_graph(ref.source, dtype, bits)
    context = f"{ref.family.name} {ref.sizes} {dtype} {bits}-bit lowered against plain"
    data = ref.batch(5)
    want = evaluate_batch(plain_graph, ref.theta, data, ref.hypers)
    got = evaluate_batch(low, ref.theta, data, ref.hypers)
    for key in got:         # (the gradient's outputs; not the predictions)
        compare(f"reference interpreter {key}", got[key], want[key],
                np.abs(want[key]) + 1.0, "float64", context)
    names = [p.name for p in plain_graph.params]
    fused = compile_graph(plain_graph, dtype, options=at_width(bits))
    plain = compile_graph(plain_graph, dtype, options=at_width(bits), plain=True)
    for B in batches or batch_sizes(lanes_of(dtype, bits), level):
        data = ref.batch(B)
        want_loss, mag_loss = ref.expected("loss", B)
        (v1, g1), (v0, g0) = (m.value_and_grad(ref.theta, **data) for m in (fused, plain))
        compare("plain objective", v0, want_loss, mag_loss, dtype, f"{context} B={B}")
        compare("objective", v1, v0, mag_loss, dtype, f"{context} B={B}")
        compare("loss", fused.loss(ref.theta, **data), plain.loss(ref.theta, **data),
                mag_loss, dtype, f"{context} B={B}")
        for name in names:
            want_g, mag = ref.expected(f"grad.{name}", B)
            compare(f"plain grad.{name}", g0[name], want_g, mag, dtype, f"{context} B={B}")
            compare(f"grad.{name}", g1[name], g0[name], mag, dtype, f"{context} B={B}")
    return fusions(low)
