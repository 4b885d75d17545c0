"""Code generation paths that only some batch sizes and shapes reach: SIMD lanes in
groups, the padded last iteration, blocked outer-product gradients with partial blocks,
threads.
Each is compared with NumPy written out here."""
import re

import numpy as np
import pytest

import lossc

SOFTMAX = """
dim D = 9
dim K = 12
input x[D]
input y: int
param W[K, D]
param c[K]
z = W @ x + c
loss = logsumexp(z) - z[y]
"""


def softmax_reference(W, c, X, Y):
    Z = X @ W.T + c
    m = Z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]
    value = np.mean(lse - Z[np.arange(len(Y)), Y])
    G = np.exp(Z - lse[:, None])
    G[np.arange(len(Y)), Y] -= 1
    G /= len(Y)
    return value, G.T @ X, G.sum(axis=0)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_outer_product_gradients_at_every_batch_size(dtype, rtol):
    m = lossc.compile(SOFTMAX, dtype=dtype)
    rng = np.random.default_rng(0)
    W, c = rng.normal(size=(12, 9)), rng.normal(size=12)
    # sizes around the lane width, the lane groups and the outer-product blocks
    for B in (1, 7, 8, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200, 1000):
        X, Y = rng.normal(size=(B, 9)), rng.integers(0, 12, size=B)
        value, g = m.value_and_grad({"W": W, "c": c}, x=X, y=Y)
        rv, rW, rc = softmax_reference(W, c, X, Y)
        assert value == pytest.approx(rv, rel=rtol), B
        np.testing.assert_allclose(g["W"], rW, rtol=rtol, atol=rtol * 1e-2, err_msg=str(B))
        np.testing.assert_allclose(g["c"], rc, rtol=rtol, atol=rtol * 1e-2, err_msg=str(B))


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 3e-5)])
@pytest.mark.parametrize("D, K", [(8, 12), (9, 7), (31, 5), (32, 10), (33, 3), (67, 13),
                                  (16, 64)])
def test_matrix_times_an_input_row_and_its_outer_product_gradient(D, K, dtype, rtol):
    """W @ x read along x's rows (one output tile at a time, with remainders of the
    tile, the vector and the row) and dW = outer(dz, x) added by the row kernel
    (codegen/row_outer.py), at batch sizes around lanes, groups and blocks."""
    m = lossc.compile(SOFTMAX.replace("D = 9", f"D = {D}").replace("K = 12", f"K = {K}"),
                      dtype=dtype, cache=False)
    rng = np.random.default_rng(D * K)
    W, c = rng.normal(size=(K, D)) / np.sqrt(D), rng.normal(size=K)
    for B in (1, 9, 16, 17, 64, 127, 128, 129, 300):
        X, Y = rng.normal(size=(B, D)), rng.integers(0, K, size=B)
        value, g = m.value_and_grad({"W": W, "c": c}, x=X, y=Y)
        rv, rW, rc = softmax_reference(W, c, X, Y)
        assert value == pytest.approx(rv, rel=rtol), B
        np.testing.assert_allclose(g["W"], rW, rtol=rtol, atol=rtol * 1e-2, err_msg=str(B))
        np.testing.assert_allclose(g["c"], rc, rtol=rtol, atol=rtol * 1e-2, err_msg=str(B))
        if B in (17, 129):   # a sample's value does not depend on the lane it lands in
            one = m.loss({"W": W, "c": c}, x=X[-1:], y=Y[-1:])
            assert m.loss({"W": W, "c": c}, x=X, y=Y) * B - \
                m.loss({"W": W, "c": c}, x=X[:-1], y=Y[:-1]) * (B - 1) == \
                pytest.approx(one, rel=1e-9 if dtype == "float64" else 1e-3)


ROW_MODEL = """
dim D = {D}
input x[D]
input y
param w[D]
param v[D]
param b
z = dot(w, x) + b
u = dot(x, tanh(v))
loss = softplus(z) - y * z + 0.5 * u ^ 2 + 1e-3 * sum(w ^ 2)
"""


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 3e-5)])
@pytest.mark.parametrize("D", [1, 3, 4, 5, 8, 9, 16, 33])
def test_dot_with_an_input_row_and_its_gradient(D, dtype, rtol):
    """dot(w, x) and the gradient s * x are read along x's rows (codegen/rows.py), with a
    parameter and with a once-per-call vector (tanh(v)), for row lengths around every
    vector width and batch sizes around the lanes, groups and the row kernel's blocks
    (s * x staged and added as a one-row outer product, codegen/row_outer.py)."""
    m = lossc.compile(ROW_MODEL.format(D=D), dtype=dtype, cache=False)
    rng = np.random.default_rng(D)
    w, v, b = rng.normal(size=D), rng.normal(size=D), 0.3
    # (5000 rows: over PREFETCH_MIN_BYTES for the longer rows, so the loop prefetches)
    for B in (1, 2, 3, 5, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 128, 129, 300, 5000):
        X, Y = rng.normal(size=(B, D)), (rng.random(B) < 0.5).astype(float)
        value, g = m.value_and_grad({"w": w, "v": v, "b": b}, x=X, y=Y)
        z, t = X @ w + b, np.tanh(v)
        u = X @ t
        ref = np.mean(np.logaddexp(0, z) - Y * z + 0.5 * u ** 2) + 1e-3 * np.sum(w ** 2)
        s = 1 / (1 + np.exp(-z)) - Y
        np.testing.assert_allclose(value, ref, rtol=rtol)
        np.testing.assert_allclose(g["w"], X.T @ s / B + 2e-3 * w, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(g["b"], s.mean(), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(g["v"], (X.T @ u / B) * (1 - t ** 2), rtol=rtol,
                                   atol=rtol)


def test_threads_give_the_same_objective_and_gradient():
    m = lossc.compile(SOFTMAX)
    rng = np.random.default_rng(1)
    W, c = rng.normal(size=(12, 9)), rng.normal(size=12)
    X, Y = rng.normal(size=(70001, 9)), rng.integers(0, 12, size=70001)
    v1, g1 = m.value_and_grad({"W": W, "c": c}, x=X, y=Y)
    m.set_threads(2)
    try:
        v2, g2 = m.value_and_grad({"W": W, "c": c}, x=X, y=Y)
        v3, _ = m.value_and_grad({"W": W, "c": c}, x=X, y=Y)
    finally:
        m.set_threads(1)
    assert v2 == v3                         # deterministic for a thread count
    assert v2 == pytest.approx(v1, rel=1e-12)
    np.testing.assert_allclose(g2["W"], g1["W"], rtol=1e-10, atol=1e-14)
    rv, rW, _ = softmax_reference(W, c, X, Y)
    assert v2 == pytest.approx(rv, rel=1e-12)
    np.testing.assert_allclose(g2["W"], rW, rtol=1e-9, atol=1e-14)


def test_hot_loop_is_packed_simd():
    from lossc.codegen import jit
    from lossc.compiler import compile_source, vector_bits
    asm = jit.assembly(compile_source(SOFTMAX).ir)
    flags = jit.host_cpu()["features"]
    bits = vector_bits(flags)          # (what Compilation.ir emits: the CPU's widest)
    reg = "%zmm" if "+avx512f" in flags and bits >= 512 else \
        "%ymm" if "+avx" in flags and bits >= 256 else "%xmm"
    packed = [l for l in asm.splitlines() if "pd\t" in l and reg in l]
    assert len(packed) > 100
    assert "exp@" not in asm and "log@" not in asm      # vector math is inline
    # the vector loop prefetches the rows of a fused training step's next batch into L2
    # (llvm.py prefetch_ahead), and a large batch's own rows ahead into L1
    if jit.host_cpu()["triple"].startswith("x86_64"):
        assert "prefetcht1" in asm and "prefetcht0" in asm


def test_row_kernel_tiles_fit_the_registers_of_each_vector_width():
    """The row kernel's tile (codegen/row_outer.py) keeps its accumulators, a sample's
    jt row vectors and the broadcast factor in the vector registers of the width it is
    emitted for (16 below 512 bits: float32 at 256 bits has float64's 512-bit lanes,
    not its 32 registers), and float32 at 512 bits gets float64's tile, not a smaller
    one."""
    from lossc.codegen.gemm import vector_registers
    from lossc.codegen.row_outer import ROW_MIN_CHAINS, row_tile
    for bits in (128, 256, 512):
        tiles = {}
        for size in (8, 4):
            kt, jt = tiles[size] = row_tile(512, 49, bits // (8 * size), size)
            assert kt * jt + jt + 1 <= vector_registers(bits), (bits, size, kt, jt)
            assert kt * jt >= ROW_MIN_CHAINS, (bits, size, kt, jt)
        assert tiles[8] == tiles[4], bits


def _loops(asm: str, function: str) -> list[list[str]]:
    """The instructions of each loop of `function` in x86 assembly: the blocks from a
    label to the conditional jump back to it."""
    lines = asm.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(function + ":"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(".Lfunc_end"))
    body = lines[start:end]
    labels = {line[:-1]: i for i, line in enumerate(body) if re.match(r"\.LBB\w+:$", line)}
    loops = []
    for i, line in enumerate(body):
        m = re.match(r"\s+j(?!mp)\w+\s+(\.LBB\w+)$", line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            loops.append(body[labels[m.group(1)]:i + 1])
    return loops


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_matrix_kernels_keep_their_tiles_in_registers(dtype):
    """At the CPU's own vector width, the inner loops of the block product (W1 @ x for
    a block of samples) and of the row kernel (W1's gradient) of W7's MLP, and of the
    row matvec (W1 @ x along the lanes' rows) of a model like W3's, neither load from
    nor store to the stack: every accumulator, loaded vector and broadcast factor has a
    register.
    (With AVX2's 16 registers, the row kernel's tile of 3 x 4 accumulators, 4 row
    vectors and a broadcast wanted 17, and the row matvec's 16 accumulators more
    still: LLVM kept some accumulators on the stack, a load and a store per FMA.)"""
    from lossc.codegen import jit
    from lossc.codegen.units import VALUE_AND_GRAD
    from lossc.compiler import compile_source, host_vector_bits
    from lossc.passes import Target, lower_for
    if not jit.host_cpu()["triple"].startswith("x86_64"):
        pytest.skip("x86 assembly")

    def hot_loops(src, functions):
        asm = jit.assembly(compile_source(src, None, dtype).unit_ir((VALUE_AND_GRAD,))[0])
        found = sorted(set(re.findall(rf"^(\w+_(?:{functions})):", asm, re.M)))
        assert found, functions
        for function in found:
            hot = [loop for loop in _innermost(_loops(asm, function))
                   if sum("vfmadd" in line for line in loop) >= 8]
            assert hot, function
            yield from ((function, loop) for loop in hot)

    w7 = ("dim D = 784\ndim H = 512\ninput x[D]\ninput y: int\nparam W1[H, D]\n"
          "param W2[10, H]\nz = W2 @ tanh(W1 @ x)\nloss = logsumexp(z) - z[y]\n")
    w3 = ("dim D = 32\ndim H = 32\ninput x[D]\ninput y\nparam W1[H, D]\nparam b1[H]\n"
          "param w2[H]\nloss = (dot(w2, tanh(W1 @ x + b1)) - y) ^ 2\n")
    lowered = lower_for(compile_source(w3).graph, Target.of(dtype, host_vector_bits()))
    assert any(n.op == "row_matvec" for n in lowered.nodes)
    loops = [*hot_loops(w7, r"row_outer_\d+|gemm_\d+"), *hot_loops(w3, "impl")]
    assert all(any(kind in f for f, _ in loops) for kind in ("row_outer", "gemm", "impl"))
    for function, loop in loops:
        spills = [line for line in loop if "(%rsp)" in line]
        assert not spills, (function, spills[:4])


def _innermost(loops: list[list[str]]) -> list[list[str]]:
    """The loops (of _loops) that contain no other."""
    texts = ["\n".join(loop) for loop in loops]
    return [loop for loop, text in zip(loops, texts)
            if not any(len(other) < len(text) and other in text for other in texts)]


def _gradient_sweeps(src: str, dtype: str, bits: int) -> int:
    """How many vector sweeps over the gradient (`grad`) the value-and-gradient
    function's IR has: a pointer into it cast to a vector pointer."""
    from lossc.codegen.units import VALUE_AND_GRAD
    from lossc.compiler import compile_source
    text = compile_source(src, None, dtype).unit_ir((VALUE_AND_GRAD,), bits)[0]
    lines = [line.strip() for line in text.splitlines()]
    T = "double" if dtype == "float64" else "float"
    vector = f"to <{bits // (64 if dtype == 'float64' else 32)} x {T}>*"
    return sum(1 for i, line in enumerate(lines[:-1])
               if f'getelementptr {T}, {T}* %"grad"' in line and vector in lines[i + 1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bits", [512, 256, 128])
def test_the_gradient_is_zeroed_and_scaled_a_vector_at_a_time(dtype, bits):
    """The prologue zeroes and the epilogue scales every gradient element once a call
    (codegen/llvm.py sweep_gradient): through vector pointers into the gradient, not
    one element at a time (LLVM's passes here vectorize no loop). v's gradient (a
    per-sample scalar times a once-per-call vector) is summed in per-lane
    accumulators, so the gradient has both sweeps."""
    src = ("dim D = 1001\ninput x[D]\ninput y\nparam v[D]\n"
           "loss = (y * sum(tanh(v)) - 1) ^ 2\n")
    assert _gradient_sweeps(src, dtype, bits) >= 2, (dtype, bits)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bits", [512, 256, 128])
def test_the_row_kernels_gradient_is_neither_zeroed_nor_scaled_apart(dtype, bits):
    """A gradient the row kernel adds (s * x, dot(w, x)'s) is stored by the call's
    first block and scaled by its last (codegen/row_outer.py): no sweep of the prologue
    or the epilogue passes over it. With the sweeps the gradient would be written three
    times more a call; the results are the same bits (the other tests of the kernel)."""
    src = "dim D = 1001\ninput x[D]\ninput y\nparam w[D]\nloss = (dot(w, x) - y) ^ 2\n"
    assert _gradient_sweeps(src, dtype, bits) == 0, (dtype, bits)


SOFTMAX_OF_INPUT = """
dim K = {K}
input x[K]
input y: int
param a[K]
z = a * x
loss = logsumexp(z) - z[y]
"""


@pytest.mark.parametrize("K", [1, 2, 7, 8, 9, 40, 300])
def test_logsumexp_and_its_softmax_share_their_exponentials(K):
    """logsumexp(z) and the softmax exp(z - logsumexp(z)) of its gradient come from one
    set of exponentials (codegen/reduce.py logsumexp_and_softmax; K = 300 is past the
    unrolled size and takes the separate way), in full and padded iterations. Finite
    logits, ordinary and huge, against the exact softmax (50 digits: for logits near
    1000, exp(z - logsumexp(z)) is off by parts in a thousand where p - 1 is tiny,
    the rounding of logsumexp magnified; the shared exponentials are not);
    infinite and NaN logits against the reference interpreter."""
    import mpmath
    from lossc.compiler import compile_source
    from lossc.ir.evaluate import evaluate
    src = SOFTMAX_OF_INPUT.format(K=K)
    m = lossc.compile(src, cache=False)
    graph = compile_source(src).graph            # after the passes: grad.a.sample
    rng = np.random.default_rng(K)
    finite = [rng.normal(size=K) * 3, np.full(K, 1000.0), np.full(K, -1000.0)]
    special = []
    if K > 1:
        finite.append(np.r_[1e300, -1e300, np.zeros(K - 2)])
        special = [np.r_[np.inf, np.zeros(K - 1)], np.r_[-np.inf, np.zeros(K - 1)],
                   np.full(K, -np.inf), np.r_[np.nan, np.zeros(K - 1)]]
    a = rng.uniform(0.5, 1.5, K)

    def exact(x, y):
        with mpmath.workdps(50):
            z = [mpmath.mpf(float(ak)) * mpmath.mpf(float(xk)) for ak, xk in zip(a, x)]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(zk) for zk in z))
            p = [mpmath.exp(zk - lse) for zk in z]
            grad = [float((p[k] - (k == y)) * mpmath.mpf(float(x[k]))) for k in range(K)]
            return float(lse - z[y]), np.array(grad)

    for row in finite + special:
        for B in (1, 9):      # a padded iteration alone; after a full group of lanes
            X = np.tile(row, (B, 1))
            Y = np.arange(B) % K
            with np.errstate(all="ignore"):
                value, g = m.value_and_grad({"a": a}, x=X, y=Y)
                if any(row is r for r in finite):
                    refs = [exact(X[i], Y[i]) for i in range(B)]
                    want_v = np.mean([r[0] for r in refs])
                    want_g = np.mean([r[1] for r in refs], axis=0)
                else:
                    want_v = np.nan if np.isnan(value) else value   # (the loss: NaN/inf)
                    want_g = np.mean([evaluate(graph, {"a": a}, {"x": X[i], "y": Y[i]}, {},
                                               "grad.a.sample") for i in range(B)], axis=0)
            # (p_y - 1 near 0 is as exact as p_y near 1 is: an ulp of 1, times x)
            scale = np.max(np.abs(row[np.isfinite(row)]), initial=1.0)
            np.testing.assert_allclose(g["a"], want_g, rtol=1e-12, atol=4e-16 * scale,
                                       err_msg=f"{row[:3]} B={B}")
            # (logsumexp(z) - z_y: the difference of two numbers of the size of z)
            np.testing.assert_allclose(value, want_v, rtol=1e-13, atol=1e-15 * scale,
                                       err_msg=f"{row[:3]}")


@pytest.mark.parametrize("D", [1, 3, 32])
def test_softplus_and_sigmoid_of_one_value_share_their_exponential(D):
    """Logistic regression's loss takes softplus(z), its gradient sigmoid(z): the
    gradient's code has no more exponentials than the loss's (one exp(-|z|) each, at
    every vector width; counted by the exp's reduction constant, 1/ln 2)."""
    from lossc.codegen.units import LOSS, VALUE_AND_GRAD
    from lossc.compiler import compile_source
    src = (f"dim D = {D}\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
           "z = dot(w, x) + b\nloss = softplus(z) - y * z\n")
    c = compile_source(src)
    log2e = "0x3ff71547652b82fe"
    for bits in (512, 256, 128):
        counts = {unit: c.unit_ir((unit,), bits)[0].count(log2e)
                  for unit in (LOSS, VALUE_AND_GRAD)}
        assert counts[LOSS] > 0
        assert counts[VALUE_AND_GRAD] == counts[LOSS], (bits, counts)


PADDING_MODEL = """
dim D = 9
input x[D]
param w[D]
param M[3, D]
h = log(x)
loss = dot(w, h) + sum(tanh(M @ h)) + 0.5 * sum(h ^ 2)
"""


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 3e-5)])
def test_padding_of_the_last_iteration_never_reaches_a_result(dtype, rtol):
    """The last B mod (groups x lanes) samples run on rows copied to a buffer padded with
    zeros, where log(x) is -inf and everything after it inf or NaN: every per-sample
    contribution (objective, per-lane gradient, staged outer-product factors, rows) must
    leave the padding lanes out for the result to be finite and right."""
    m = lossc.compile(PADDING_MODEL, dtype=dtype, cache=False)
    rng = np.random.default_rng(11)
    w, M = rng.normal(size=9), rng.normal(size=(3, 9)) / 3
    for B in list(range(1, 41)) + [63, 65, 127, 129, 1001]:
        X = rng.uniform(0.5, 2.0, size=(B, 9))
        value, g = m.value_and_grad({"w": w, "M": M}, x=X)
        H = np.log(X)
        T = np.tanh(H @ M.T)
        ref = np.mean(H @ w + T.sum(axis=1) + 0.5 * (H ** 2).sum(axis=1))
        dH = w + (1 - T ** 2) @ M + H                 # d loss / d h, per sample
        assert value == pytest.approx(ref, rel=rtol), B
        np.testing.assert_allclose(g["w"], H.mean(axis=0), rtol=rtol, atol=rtol, err_msg=B)
        np.testing.assert_allclose(g["M"], (1 - T ** 2).T @ H / B, rtol=rtol, atol=rtol,
                                   err_msg=str(B))
        assert np.all(np.isfinite(dH))


SHIFTED_LABELS = """
dim D = 5
dim K = 4
input x[D]
input y: int
param W[K, D]
z = W @ x
loss = logsumexp(z) - z[y - 1]
"""


def test_padding_of_int_inputs_holds_valid_indices_and_errors_name_the_sample():
    """Labels 1..K used as z[y - 1]: padding with zeros would index -1, so int inputs are
    padded with the last sample's row. A bad label is reported with its own sample,
    wherever it falls (full iterations or the padded one)."""
    m = lossc.compile(SHIFTED_LABELS, cache=False)
    rng = np.random.default_rng(12)
    W = rng.normal(size=(4, 5))
    for B in (1, 3, 8, 9, 17, 31, 33):
        X, Y = rng.normal(size=(B, 5)), rng.integers(1, 5, size=B)
        value, g = m.value_and_grad({"W": W}, x=X, y=Y)
        rv, rW, _ = softmax_reference(W, np.zeros(4), X, Y - 1)
        assert value == pytest.approx(rv, rel=1e-12), B
        np.testing.assert_allclose(g["W"], rW, rtol=1e-12, atol=1e-14, err_msg=str(B))
        for bad in sorted({0, B // 2, B - 1}):
            Yb = Y.copy()
            Yb[bad] = 0
            with pytest.raises(ValueError, match=rf"sample {bad}\b"):
                m.value_and_grad({"W": W}, x=X, y=Yb)


def _native_kernels(build, T, arg_types: list, names: list):
    """The functions build(emitter, name) writes, one per name (void, taking
    arg_types), compiled as lossc compiles code and linked into this process."""
    from llvmlite import ir
    from lossc.codegen.emitter import Emitter
    from lossc.codegen.jit import NativeCode, compile_ir
    module = ir.Module()
    for name in names:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), arg_types), name=name)
        em = Emitter.for_kernel(module, T, fn)
        build(em, name)
        em.b.ret_void()
    return NativeCode(compile_ir(str(module)), tuple(names))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_sweep_updates_each_element_of_its_range_once(dtype):
    """Emitter.sweep (the gradient's zeroing and scaling, a call's touched rows'
    scaling): every element of base[lo .. hi) once and none outside, a vector of
    `lanes` at a time and the rest one by one, at lane counts 1 to 16, with hi known
    when compiling or only at run time, down to an empty range."""
    import ctypes
    from llvmlite import ir
    from lossc.codegen.values import I64
    T = ir.DoubleType() if dtype == "float64" else ir.FloatType()
    cases = [(lanes, lo) for lanes in (1, 2, 4, 8, 16) for lo in (0, 3)]

    def build(em, name):
        lanes, lo, hi = (int(x) if x != "n" else None for x in name.split("_")[1:])
        base, n = em.fn.args
        b = em.b
        def add_one(j, k):
            p = em.elements_at(base, j, k)
            b.store(b.fadd(b.load(p, align=em.T_bytes), em.splat(em.fconst(1), k)), p,
                    align=em.T_bytes)
        em.sweep(lo, n if hi is None else hi, lanes, add_one)

    names = list(dict.fromkeys(f"sweep_{lanes}_{lo}_{hi}" for lanes, lo in cases
                               for hi in ["n", lo, lo + 1, lo + lanes, lo + 2 * lanes + 1]))
    code = _native_kernels(build, T, [T.as_pointer(), I64], names)
    for name in names:
        lanes, lo, hi = name.split("_")[1:]
        lanes, lo = int(lanes), int(lo)
        f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(code.addresses[name])
        for stop in (range(lo, lo + 3 * lanes + 5) if hi == "n" else [int(hi)]):
            a = np.zeros(lo + 3 * lanes + 8, dtype=dtype)
            f(a.ctypes.data, stop)
            want = np.zeros_like(a)
            want[lo:stop] = 1
            np.testing.assert_array_equal(a, want, err_msg=f"{name} to {stop}")


def test_prefetch_span_asks_for_each_line_of_a_row_once_at_most_the_cap(monkeypatch):
    """prefetch_span (the fused update's row prefetches, a row length known only at
    run time): one address per 64 bytes from the row's start and its last byte, up to
    AHEAD_ROW_LINES lines; a longer row gets its first AHEAD_ROW_LINES lines (and its
    start again) as prefetch_row gives a row of a length known when compiling. The
    prefetches are recorded in place of llvm.prefetch."""
    import ctypes
    from llvmlite import ir
    from lossc.codegen import prefetch
    from lossc.codegen.values import I64

    def record(em, start, offsets, locality):
        b = em.b
        log, at = em.fn.args[2], em.fn.args[3]
        for off in offsets:
            k = b.load(at)
            b.store(b.ptrtoint(b.gep(start, [em.iconst(off)]), I64), b.gep(log, [k]))
            b.store(b.add(k, em.iconst(1)), at)
    monkeypatch.setattr(prefetch, "prefetch_at", record)

    def build(em, name):
        start, nbytes = em.fn.args[:2]
        prefetch.prefetch_span(em, start, nbytes, locality=3)

    I8P = ir.IntType(8).as_pointer()
    code = _native_kernels(build, ir.DoubleType(), [I8P, I64, I64.as_pointer(),
                                                   I64.as_pointer()], ["span"])
    f = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_void_p)(code.addresses["span"])
    cap = prefetch.AHEAD_ROW_LINES
    for nbytes in (1, 8, 63, 64, 65, 256, 64 * cap - 1, 64 * cap, 64 * cap + 24, 4096):
        log, at = np.zeros(64, dtype=np.int64), np.zeros(1, dtype=np.int64)
        f(1 << 20, nbytes, log.ctypes.data, at.ctypes.data)
        lines = -(-nbytes // 64)
        want = [64 * k for k in range(min(lines, cap))]
        want += [nbytes - 1] if lines < cap else [0]
        assert list(log[:at[0]] - (1 << 20)) == want, nbytes


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bits", [512, 256, 64])
def test_long_matrix_vector_sums_of_a_per_sample_vector_match_the_reference(dtype, bits):
    """V @ h and h @ A of a per-sample h longer than reduce.py's UNROLL sum in a loop,
    MATVEC_TILE outputs side by side (matmul.py matvec_loop_tiles): outputs through a
    whole tile and its remainder, against the reference interpreter, on one thread and
    two."""
    import sweep
    from lossc.codegen.matmul import MATVEC_TILE
    from lossc.codegen.reduce import UNROLL
    family = sweep.Family("longmatvec", ("D", "H", "K"), """
input x[D]
input y: int
param W[H, D] = normal(0, 0.3)
param V[K, H] = normal(0, 0.3)
param A[H, K] = normal(0, 0.3)
h = tanh(W @ x)
z = V @ h + h @ A
loss = logsumexp(z) - z[y]
""", ints={"y": "K"}, fan_in="H")
    sizes = {"D": 3, "H": UNROLL + 7, "K": 2 * MATVEC_TILE + 1}
    ref = sweep.reference(family, sizes, B=40)
    m = sweep.compiled(ref, dtype, bits)
    assert sweep.check_calls(ref, m, dtype, bits, "fast", threads=(1, 2),
                             batches=(1, 17, 40)) > 0
