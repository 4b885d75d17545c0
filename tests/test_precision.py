"""Values and derivatives where a formula that is exact in real numbers lost the answer
to rounding: derivatives written from the function's value (1 - tanh^2, expm1 + 1),
products of squares that under- or overflow (atan2, norm), differences of nearly equal
terms in forward mode (sigmoid''), NaN lost by a comparison (max, min, relu), and long
float32 sums. The references are mpmath at 50 digits."""
import mpmath
import numpy as np
import pytest

import lossc

mpmath.mp.dps = 50
RTOL = {"float64": 1e-13, "float32": 2e-6}


def model(source: str, dtype: str):
    return lossc.compile(source, dtype=dtype, cache=False)


def derivatives(m, dtype: str, **at):
    """(gradient, hessian) of a model of scalar parameters at `at`, the gradient in the
    parameters' order, with the hvp checked against the Hessian's columns."""
    theta = {k: np.array(v, dtype) for k, v in at.items()}
    grad = m.value_and_grad(theta)[1]
    h = np.asarray(m.hessian(theta), dtype=np.float64)
    for k, name in enumerate(at):
        t = {n: (1.0 if n == name else 0.0) for n in at}
        hv = m.hvp(theta, t)
        np.testing.assert_allclose([float(hv[n]) for n in at], h[:, k], rtol=RTOL[dtype])
    return np.array([float(grad[k]) for k in at]), h


def near(got, want, dtype: str):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64),
                               np.asarray(want, dtype=np.float64), rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("form", ["expm1(p)", "exp(p) - 1"])
def test_expm1s_derivative_is_exp_far_below_zero(dtype, form):
    """expm1' = exp: as expm1(x) + 1 it was 0 below x = -37 (float64) and -17
    (float32). exp(p) - 1 is rewritten to expm1(p), which made the naive form wrong."""
    m = model(f"param p\nloss = {form}\n", dtype)
    for x in (-40.0, -20.0, -3.0, 0.0, 1e-9, 5.0):
        if dtype == "float32" and x == -40:
            continue                       # (exp(-40) is below float32's normal range)
        g, h = derivatives(m, dtype, p=x)
        want = float(mpmath.exp(np.float64(np.array(x, dtype))))
        near(g[0], want, dtype)
        near(h[0, 0], want, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanhs_derivatives_keep_their_precision_for_large_arguments(dtype):
    """tanh' = sech^2: as 1 - tanh^2 it was 0 from |x| = 9 (float32) or 19 (float64),
    and lost digits long before (float32 at x = 5: 2e-4 relative)."""
    m = model("param p\nloss = tanh(p)\n", dtype)
    xs = (-20.0, -5.0, -0.5, 1e-4, 0.3, 2.0, 5.0, 9.5, 20.0, 40.0)
    for x in xs:
        x = float(np.array(x, dtype))
        g, h = derivatives(m, dtype, p=x)
        sech2 = mpmath.sech(x) ** 2
        near(g[0], float(sech2), dtype)
        near(h[0, 0], float(-2 * sech2 * mpmath.tanh(x)), dtype)
    # where sech^2 is below the smallest subnormal number it is 0, not held at ~1e-307
    # (float32: 2e-38) by the exponential's clamp, and 0 inf is NaN (in between, where
    # it is subnormal, it is 0 as well)
    m = model("param p\nloss = 1e30 * tanh(p)\n", dtype)
    for x in ((300.0, 400.0, 1000.0, np.inf) if dtype == "float64" else (40.0, 60.0, 1e4)):
        g, h = derivatives(m, dtype, p=x)
        sech2 = float(np.array(float(mpmath.sech(x) ** 2), dtype))   # (0 past 400, 60)
        near([g[0], h[0, 0]], [1e30 * sech2, float(-2e30 * sech2 * mpmath.tanh(x))], dtype)
    m = model("param p\nparam q\nloss = tanh(q / p)\n", dtype)
    g = m.value_and_grad({"p": np.array(0.0, dtype), "q": np.array(1.0, dtype)})[1]
    assert np.isnan(g["p"]) and np.isnan(g["q"]), g


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_atan2s_gradient_at_any_scale(dtype):
    """(x, -y) / (x^2 + y^2): x^2 + y^2 underflowed to 0 below 1e-154 (float64) or 1e-19
    (float32), and the gradient was taken as the origin's 0; it overflowed past 1e154."""
    m = model("param y\nparam x\nloss = atan2(y, x)\n", dtype)
    scales = (1e-200, 1e-160, 1.0, 1e150, 1e200) if dtype == "float64" else (
        1e-25, 1e-18, 1.0, 1e17, 1e20)
    for s in scales:
        for (a, c) in ((1.0, 1.0), (-3.0, 2.0), (0.5, -7.0)):
            y, x = float(np.array(a * s, dtype)), float(np.array(c * s, dtype))
            g = m.value_and_grad({"y": np.array(y, dtype), "x": np.array(x, dtype)})[1]
            r2 = mpmath.mpf(x) ** 2 + mpmath.mpf(y) ** 2
            near([g["y"], g["x"]], [float(x / r2), float(-y / r2)], dtype)
    g, h = derivatives(m, dtype, y=0.0, x=0.0)
    assert np.all(g == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoids_second_derivative_near_zero(dtype):
    """sigmoid'' = -sigmoid' tanh(x / 2): forward mode over sigmoid(x) sigmoid(-x) took
    the difference of two products near 1/8 (float32 at x = 1e-3: 7e-5 relative, and 0
    at 1e-8)."""
    m = model("param p\nloss = sigmoid(p)\n", dtype)
    for x in (1e-8, -1e-5, 1e-3, 0.7, -3.0, 30.0):
        x = float(np.array(x, dtype))
        g, h = derivatives(m, dtype, p=x)
        s = 1 / (1 + mpmath.exp(-x))
        near(g[0], float(s * (1 - s)), dtype)
        near(h[0, 0], float(s * (1 - s) * (1 - 2 * s)), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_norm_at_any_scale(dtype):
    """norm(w) and its derivatives from w over its largest element: the sum of squares
    underflowed to 0 (a norm of 0, and the zero vector's gradient 0) or overflowed to
    inf (gradient 0)."""
    m = model("param w[3]\nloss = norm(w)\n", dtype)
    scales = (1e-200, 1e-160, 1.0, 1e160, 1e200) if dtype == "float64" else (
        1e-25, 1e-20, 1.0, 1e20, 1e25)
    for s in scales:
        w = np.array([1.0, -2.0, 0.5], dtype) * np.array(s, dtype)
        v, g = m.value_and_grad({"w": w})
        h = m.hessian({"w": w})
        wm = [mpmath.mpf(float(t)) for t in w]
        n = mpmath.sqrt(sum(t ** 2 for t in wm))
        near(v, float(n), dtype)
        near(g["w"], [float(t / n) for t in wm], dtype)
        want = [[float(((i == j) - wm[i] * wm[j] / n ** 2) / n) for j in range(3)]
                for i in range(3)]
        np.testing.assert_allclose(h, want, rtol=RTOL[dtype],
                                   atol=RTOL[dtype] * float(1 / n))
    v, g = m.value_and_grad({"w": np.zeros(3, dtype)})
    assert v == 0 and np.all(g["w"] == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("f", ["max", "min"])
def test_max_and_min_propagate_nan_from_either_side(dtype, f):
    """As NumPy's maximum and minimum: select(x >= y, x, y) gave y where x is NaN, and
    a NaN sample dropped out of the loss."""
    ref = {"max": np.maximum, "min": np.minimum}[f]
    m = model(f"input x\ninput y\nloss = {f}(x, y)\n", dtype)
    pairs = [(np.nan, 0.0), (0.0, np.nan), (np.nan, np.nan), (1.0, 2.0), (2.0, 1.0),
             (-0.0, 0.0), (np.inf, np.nan), (-np.inf, 3.0)]
    for B in (1, 7, 17):
        for x, y in pairs:
            xs = np.full(B, 0.5, dtype)
            ys = np.full(B, 0.25, dtype)
            xs[B // 2], ys[B // 2] = x, y
            want = np.mean(ref(xs.astype(np.float64), ys.astype(np.float64)))
            got = m.loss({}, x=xs, y=ys)
            if np.isnan(want):
                assert np.isnan(got), (B, x, y)
            else:
                near(got, want, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_of_nan_is_nan(dtype):
    m = model("input x\nparam a = 1\nloss = relu(a * x)\n", dtype)
    for B in (1, 5, 16):
        x = np.linspace(-1, 1, B).astype(dtype)
        x[B // 2] = np.nan
        v, g = m.value_and_grad(m.init_params(), x=x)
        assert np.isnan(v)
        x[B // 2] = 0.5
        near(m.loss(m.init_params(), x=x), np.mean(np.maximum(x.astype(float), 0)), dtype)


@pytest.mark.parametrize("n", [257, 1000, 100_000])
def test_float32_sums_longer_than_the_unrolled_tree(n):
    """Groups past reduce.UNROLL elements are summed in a loop, in double precision:
    float32's sequential sum of 100,000 elements was 1.4e-4 off. sum, norm,
    logsumexp and log_softmax, of parameters (once per call) and per sample."""
    rng = np.random.default_rng(n)
    w = (0.1 + rng.random(n)).astype(np.float32)
    x = rng.random((3, n)).astype(np.float32)
    wx = x.astype(np.float64) * w.astype(np.float64)
    m = model(f"dim N = {n}\nparam w[N]\nloss = sum(w) + norm(w) + logsumexp(w)\n",
              "float32")
    w64 = w.astype(np.float64)
    want = w64.sum() + np.sqrt(np.sum(w64 ** 2)) + np.log(np.sum(np.exp(w64)))
    assert m.loss({"w": w}) == pytest.approx(want, rel=1e-6)
    m = model(f"dim N = {n}\ninput x[N]\nparam w[N]\n"
              "loss = sum(w * x) + norm(w * x) - log_softmax(w * x)[0]\n", "float32")
    lse = np.log(np.sum(np.exp(wx), axis=1))
    want = np.mean(wx.sum(1) + np.sqrt(np.sum(wx ** 2, axis=1)) - (wx[:, 0] - lse))
    assert m.loss({"w": w}, x=x) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_float32_loss_over_a_million_samples(threads):
    """The loss is summed over the batch in double precision: in float32 the mean of
    (w x - 0.1)^2 over 10^6 samples was 9e-4 off."""
    m = model("input x\nparam w = 1\nloss = (w * x - 0.1) ^ 2\n", "float32")
    m.set_threads(threads)
    x = np.random.default_rng(1).random(1_000_003).astype(np.float32)
    d = x.astype(np.float64) - np.float64(np.float32(0.1))
    want = np.mean(d ** 2)
    assert m.loss(m.init_params(), x=x) == pytest.approx(want, rel=2e-6)
    assert m.value_and_grad(m.init_params(), x=x)[0] == pytest.approx(want, rel=2e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("f", ["max", "min"])
def test_a_reductions_gradient_goes_to_its_first_nan(dtype, f):
    """max(v) of a v holding NaN is NaN, and its gradient goes to the first NaN, as
    NumPy's argmax picks it and the reference interpreter does: no element compared
    equal to the NaN maximum, and the gradient was 0 everywhere."""
    m = model(f"param v[6]\nparam M[2, 3]\nloss = {f}(v) + sum({f}(M, axis=1))\n", dtype)
    v = np.array([1.0, 3.0, np.nan, 2.0, np.nan, 0.0], dtype)
    M = np.array([[np.nan, 1.0, np.nan], [4.0, -1.0, 2.0]], dtype)
    value, grad = m.value_and_grad({"v": v, "M": M})
    assert np.isnan(value)
    np.testing.assert_array_equal(grad["v"], [0, 0, 1, 0, 0, 0])
    want = np.zeros((2, 3))
    want[0, 0] = want[1, 0 if f == "max" else 1] = 1
    np.testing.assert_array_equal(grad["M"], want)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_logsumexp_and_log_softmax_keep_terms_far_below_the_maximum(dtype):
    """log(sum(exp(v))) as M + log1p(t), t the terms other than the maximum's exact 1:
    as M + log(s) the small terms rounded away in s (logsumexp([0, -40]) was 0, not
    4.2e-18; the log-probability of a confident prediction was 0). Through the
    reduction, log_softmax, and the kernel that pairs logsumexp with its softmax."""
    m = model("param v[4]\nloss = logsumexp(v)\n", dtype)
    ls = model("param v[4]\nloss = log_softmax(v)[0] + 3 * log_softmax(v)[2]\n", dtype)
    pair = model("dim K = 4\ninput z[K]\nparam a = 1\nloss = logsumexp(a * z)\n", dtype)
    cases = ([0.0, -40.0, -50.0, -60.0], [0.0, -20.0, -17.5, -30.0], [3.0, 3.0, 1.0, -2.0],
             [1000.0, 999.0, -5.0, 1000.0], [0.5, -0.25, 2.0, 1.0], [-7.0, -7.0, -7.0, -7.0])
    for v in cases:
        v = np.array(v, dtype)
        vm = [mpmath.mpf(float(t)) for t in v]
        lse = mpmath.log(sum(mpmath.exp(t) for t in vm))
        near(m.loss({"v": v}), float(lse), dtype)
        near(ls.loss({"v": v}), float((vm[0] - lse) + 3 * (vm[2] - lse)), dtype)
        # (the value of value_and_grad: the gradient's code pairs logsumexp with softmax)
        value = pair.value_and_grad({"a": np.array(1.0, dtype)}, z=np.stack([v] * 5))[0]
        near(value, float(lse), dtype)
    for v, want in (([np.inf, 1, 2, 3], np.inf), ([-np.inf] * 4, -np.inf),
                    ([np.nan, 1, 2, 3], np.nan)):
        got = m.loss({"v": np.array(v, dtype)})
        assert got == want or (np.isnan(want) and np.isnan(got)), (v, got)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pows_derivatives_where_the_formulas_give_zero_times_infinity(dtype):
    """x ^ y at x = 0: y x^(y - 1) is 0 inf = NaN for y = 0, and so is x^y log x where a
    Hessian multiplies it by a zero tangent. JAX's choices (d/dx 0 where y = 0, log 1 in
    place of log 0) give x ^ 0.0 gradient 0 and x ^ 1.0 second derivative 0 at x = 0;
    away from 0 the derivatives are mpmath's."""
    for y in (0.0, 1.0, 0.5, 2.0, 3.5):
        m = model(f"param p\nloss = p ^ {y!r}\n", dtype)
        for x in (0.0, 0.3, 2.0, 40.0):
            g, h = derivatives(m, dtype, p=x)
            if x == 0.0:
                want_g = {0.0: 0.0, 1.0: 1.0, 0.5: np.inf, 2.0: 0.0, 3.5: 0.0}[y]
                want_h = {0.0: 0.0, 1.0: 0.0, 0.5: -np.inf, 2.0: 2.0, 3.5: 0.0}[y]
                assert (g[0], h[0, 0]) == (want_g, want_h), (y, g, h)
            else:
                xm = mpmath.mpf(float(np.array(x, dtype)))
                near(g[0], float(y * xm ** (y - 1)), dtype)
                near(h[0, 0], float(y * (y - 1) * xm ** (y - 2)), dtype)
    m = model("param p\nparam q\nloss = p ^ q\n", dtype)
    for q in (0.0, 1.0, 2.0):
        # (the mixed derivative p^(q-1) (1 + q log p) has no limit at p = 0: only the
        # pure ones are checked, and that nothing is NaN)
        theta = {"p": np.array(0.0, dtype), "q": np.array(q, dtype)}
        g = m.value_and_grad(theta)[1]
        h = m.hessian(theta)
        hv = m.hvp(theta, {"p": 1.0, "q": 0.0})
        assert g["q"] == 0 and h[0, 0] == hv["p"] == (2.0 if q == 2.0 else 0.0), (q, h, hv)
        assert np.all(np.isfinite(h)) and np.isfinite(hv["q"]), (q, h, hv)
    # (q = 0 exactly, a parameter's default start: the guard of x^0's derivative at
    # x = 0 had dropped the mixed derivative 1 / p everywhere)
    for p, q in ((1.5, 0.7), (2.0, 0.0), (0.3, 0.0), (0.3, 1.0), (1e-17, 2.0)):
        g, h = derivatives(m, dtype, p=p, q=q)
        pm, qm = (mpmath.mpf(float(np.array(v, dtype))) for v in (p, q))
        near(g, [float(qm * pm ** (qm - 1)), float(pm ** qm * mpmath.log(pm))], dtype)
        near(h, [[float(qm * (qm - 1) * pm ** (qm - 2)),
                  float(pm ** (qm - 1) * (1 + qm * mpmath.log(pm)))],
                 [float(pm ** (qm - 1) * (1 + qm * mpmath.log(pm))),
                  float(pm ** qm * mpmath.log(pm) ** 2)]], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pows_derivatives_at_y_0_where_x_to_the_minus_1_overflows(dtype):
    """x ^ 0 is 1 for every x: its derivative y x^(y - 1) was 0 inf = NaN at subnormal
    x (x^-1 overflows), for a constant y and for y = 0 given at run time, and for a
    constant y its second derivative y (y - 1) x^(y - 2) was NaN from x^-2 overflowing
    (below 1e-154; float32 5e-20); x ^ 1.0's second derivative 0 * x^-1 likewise. All
    are 0; p ^ q's gradient in q at q = 0 stays log p."""
    tiny = (1e-320, 1e-200, 1e-160) if dtype == "float64" else (1e-44, 1e-30, 1e-20)
    for x in tiny:
        for y in (0.0, 1.0):
            g, h = derivatives(model(f"param p\nloss = p ^ {y!r}\n", dtype), dtype, p=x)
            assert (g[0], h[0, 0]) == (y, 0.0), (x, y, g, h)
        m = model("input y\nparam p\nloss = p ^ y\n", dtype)
        grad = m.value_and_grad({"p": np.array(x, dtype)}, y=np.zeros(3, dtype))[1]
        assert grad["p"] == 0.0, (x, grad)
        m = model("param p\nparam q\nloss = p ^ q\n", dtype)
        grad = m.value_and_grad({"p": np.array(x, dtype), "q": np.array(0.0, dtype)})[1]
        assert grad["p"] == 0.0, (x, grad)
        near(grad["q"], float(mpmath.log(mpmath.mpf(float(np.array(x, dtype))))), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_negative_bases_second_derivative_beside_a_learned_exponent(dtype):
    """a ^ b at a < 0: d/db = a^b log a is NaN, and a Hessian column along a (b's
    tangent 0) took 0 * NaN into d2/da2 too; that entry is b (b - 1) a^(b - 2), as it
    is for b a hyper. The entries along b stay NaN."""
    m = model("param a\nparam b\nloss = a ^ b\n", dtype)
    for a, b in ((-2.0, 3.0), (-0.5, 4.0), (-3.0, 2.0)):
        theta = {"a": np.array(a, dtype), "b": np.array(b, dtype)}
        want = b * (b - 1) * a ** (b - 2)
        h = m.hessian(theta)
        near(h[0, 0], want, dtype)
        near(m.hvp(theta, {"a": 1.0, "b": 0.0})["a"], want, dtype)
        assert np.isnan(h[0, 1]) and np.isnan(h[1, 1]), h
        near(m.value_and_grad(theta)[1]["a"], b * a ** (b - 1), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bits", [64, 128, 256])
def test_abs_of_a_nan_has_a_nan_gradient_in_every_lane(dtype, bits):
    """abs' is sign, NumPy's: NaN at NaN (docs/language.md, the reference interpreter).
    The compiled sign gave 0 there, so a NaN sample dropped out of the gradient."""
    import dataclasses
    options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
    m = lossc.compile("input x\nparam p\nloss = abs(x + p)\n", dtype=dtype, cache=False,
                      options=options)
    x = np.array([1.0, -2.0, 0.0, -0.0, 3.0, -1.0, 2.0, 5.0, -4.0], dtype)
    theta = {"p": np.array(0.0, dtype)}
    assert m.value_and_grad(theta, x=x)[1]["p"] == np.mean(np.sign(x))
    for k in range(len(x)):
        with_nan = x.copy()
        with_nan[k] = np.nan
        assert np.isnan(m.value_and_grad(theta, x=with_nan)[1]["p"]), k


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_at_infinities_as_documented_and_as_the_reference_interpreter(dtype):
    """An infinite maximum shifts by 0 (docs/language.md): softmax([inf, 0, 1]) is
    [nan, 0, 0]. The reference interpreter shifted by inf, and gave NaN throughout."""
    from lossc.compiler import compile_source
    from lossc.ir.evaluate import objective
    src = "param v[3]\nloss = softmax(v)[0] + 2 * softmax(v)[1] + 4 * softmax(v)[2]\n"
    m = model(src, dtype)
    graph = compile_source(src, until="dce").graph
    for v, want in (([np.inf, 0, 1], np.nan), ([1, np.inf, -np.inf], np.nan),
                    ([-np.inf, 0, 0], 3.0), ([-np.inf, -np.inf, 5], 4.0)):
        theta = {"v": np.array(v, dtype)}
        got, ref = m.loss(theta), objective(graph, theta, {})
        for x in (got, ref):
            assert x == want or (np.isnan(want) and np.isnan(x)), (v, got, ref)
    theta = {"v": np.array([np.inf, 0, 1], dtype)}
    for k in (1, 2):
        src = f"param v[3]\nloss = softmax(v)[{k}]\n"
        assert model(src, dtype).loss(theta) == 0
        assert objective(compile_source(src, until="dce").graph, theta, {}) == 0


def _softmax_mp(v):
    e = [mpmath.exp(mpmath.mpf(float(t))) for t in v]
    return [x / sum(e) for x in e]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_second_derivatives_of_logsumexp_and_softmax_far_below_the_maximum(dtype):
    """Forward mode over softmax weighed t - sum(s t), which is 0 at the maximum once
    its s rounds to 1: the Hessian of logsumexp([0, -40, -50]) had 0 for 4.2e-18 (and
    float32's at [0, -20, -30] 0 for 2.1e-9). The tangents are centered at the
    maximum's; the gradient of logsumexp, exp(z - logsumexp(z)), takes softmax's."""
    srcs = {"lse": "param v[3]\nloss = logsumexp(v)\n",
            "log_softmax": "param v[3]\nloss = -log_softmax(v)[0]\n",
            "softmax": "param v[3]\nloss = softmax(v)[1]\n",
            "cross-entropy": "dim K = 3\ninput x[K]\ninput y: int\nparam v[K]\n"
                             "z = v + x\nloss = logsumexp(z) - z[y]\n",
            "rows": "param V[2, 3]\nloss = sum(logsumexp(V, axis=1))\n"}
    for name, src in srcs.items():
        m = model(src, dtype)
        for v in ([0.0, -40.0, -50.0], [0.0, -20.0, -30.0], [3.0, 3.0, 1.0], [0.5, -0.25, 2.0]):
            if dtype == "float32" and v[1] == -40:
                continue                        # (exp(-40) is below float32's normal range)
            s = _softmax_mp(np.array(v, dtype))
            lse_h = [[(s[i] if i == j else 0) - s[i] * s[j] for j in range(3)] for i in range(3)]
            if name == "softmax":               # d2 s_1 = s_1 (e_1 - s)(e_1 - s)^T + s_1 d(e_1 - s)
                e = [1 if i == 1 else 0 for i in range(3)]
                want = [[s[1] * ((e[i] - s[i]) * (e[j] - s[j]) - lse_h[i][j]) for j in range(3)]
                        for i in range(3)]
            else:
                want = lse_h
            theta = ({"V": np.array([v, v[::-1]], dtype)} if name == "rows"
                     else {"v": np.array(v, dtype)})
            data = ({"x": np.zeros((2, 3), dtype), "y": np.array([0, 2])}
                    if name == "cross-entropy" else {})
            h = np.asarray(m.hessian(theta, **data), dtype=np.float64)
            if name == "rows":
                h = h[:3, :3]
            near(h, np.array([[float(w) for w in row] for row in want]), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_hessian_entry_past_half_the_largest_number(dtype):
    """(H + H^T) / 2 overflowed past 9e307 (float32: 1.7e38), where the hvp gave the
    entry: it is halved first there, and only there (halving first rounds an odd
    subnormal: a Hessian of 1.5e-323 came back as 2e-323)."""
    x = 709.5 if dtype == "float64" else 88.5
    m = model("param p\nloss = exp(p)\n", dtype)
    g, h = derivatives(m, dtype, p=x)
    near(h[0, 0], float(mpmath.exp(x)), dtype)
    tiny = np.array(3 * np.finfo(dtype).smallest_subnormal, dtype)
    m = model("param p\nhyper c = 1\nloss = c * exp(p)\n", dtype)
    assert m.hessian({"p": np.array(0.0, dtype)}, c=tiny)[0, 0] == tiny


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradients_of_softmax_and_log_softmax_far_below_the_maximum(dtype):
    """Reverse mode: g - s sum(g) and s (g - sum(s g)) at the maximum lose 1 - s_m once
    s_m rounds to 1: -log_softmax([0, -40])[0] had gradient 0 in p where the truth is
    -4.2e-18 (and its jvp had it right). Through a vector, [p, q], and a matrix's rows
    and columns."""
    cases = {"param v[3]\nloss = -log_softmax(v)[0]\n": lambda s: [s[0] - 1, s[1], s[2]],
             "param v[3]\nloss = -log(softmax(v)[0])\n": lambda s: [s[0] - 1, s[1], s[2]],
             "param v[3]\nloss = softmax(v)[0]\n":
                 lambda s: [s[0] * (1 - s[0]), -s[0] * s[1], -s[0] * s[2]],
             "param v[3]\nloss = 2 * log_softmax(v)[1] + softmax(v)[2]\n":
                 lambda s: [-2 * s[0] - s[2] * s[0], 2 * (1 - s[1]) - s[2] * s[1],
                            -2 * s[2] + s[2] * (1 - s[2])]}
    for v in ([0.0, -40.0, -50.0], [0.0, -20.0, -30.0], [-3.0, 1.0, 1.0], [0.5, -0.25, 2.0]):
        if dtype == "float32" and v[1] == -40:
            continue
        s = _softmax_mp(np.array(v, dtype))       # (at 50 digits, 1 - s[0] is exact)
        for src, want in cases.items():
            m = model(src, dtype)
            g = m.value_and_grad({"v": np.array(v, dtype)})[1]["v"]
            w = [float(x) for x in want(s)]
            near(g, w, dtype)
            t = {"v": np.eye(3, dtype=dtype)[0]}
            near(m.jvp({"v": np.array(v, dtype)}, t)[1], w[0], dtype)
    m = model("param V[2, 3]\nloss = -log_softmax(V, axis=1)[0, 0] "
              "- log_softmax(V, axis=0)[0, 0]\n", dtype)
    V = np.array([[0.0, -20.0, -30.0], [-25.0, -20.0, -35.0]], dtype)
    r, c = _softmax_mp(V[0]), _softmax_mp(V[:, 0])
    want = np.zeros((2, 3))
    want[0] = [float(r[0] - 1), float(r[1]), float(r[2])]
    want[:, 0] += [float(c[0] - 1), float(c[1])]
    near(m.value_and_grad({"V": V})[1]["V"], want, dtype)
