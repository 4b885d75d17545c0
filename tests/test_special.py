"""The special functions of the language (lgamma, digamma, erfc, xlogy) and the
internal trigamma and polygamma2: compiled values and derivatives, and the reference
interpreter's NumPy semantics, against SciPy to 1e-12 relative over their domains."""
import numpy as np
import pytest
import scipy.special as sp

import lossc
from lossc.ir.ops import OPS

N = 64      # points per call: eight vectors of lanes at any width

SCIPY = {"lgamma": sp.gammaln, "digamma": sp.digamma, "erfc": sp.erfc,
         "trigamma": lambda x: sp.polygamma(1, x), "polygamma2": lambda x: sp.polygamma(2, x)}
DERIVATIVE = {"lgamma": sp.digamma, "digamma": lambda x: sp.polygamma(1, x),
              "erfc": lambda x: -2 / np.sqrt(np.pi) * np.exp(-x * x)}


def _points(name: str) -> np.ndarray:
    """Each function's domain: both signs for erfc (to 26, past which it is subnormal),
    positive arguments over many decades and negative ones between the poles for the
    gamma family."""
    rng = np.random.default_rng(7)
    if name == "erfc":
        return np.concatenate([np.linspace(-6, 26, 5 * N), rng.uniform(-1, 1, N)])
    poles_apart = -rng.integers(0, 30, N) - rng.uniform(0.05, 0.95, N)
    return np.concatenate([np.geomspace(1e-6, 1e12, 3 * N), np.linspace(0.01, 20, 2 * N),
                           poles_apart])


def _tolerance(name: str, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """1e-12 of |f(x)|; for x < 0, where the reflection formula's two terms cancel next
    to f's zeros, 1e-12 of the larger term."""
    scale = np.abs(ref)
    if name in ("lgamma", "digamma", "trigamma", "polygamma2"):
        mirror = np.abs(SCIPY[name](np.where(x < 0, 1 - x, x)))
        scale = np.where(x < 0, np.maximum(scale, mirror), scale)
    return 1e-12 * scale


def _compiled_values(source: str, x: np.ndarray, dtype="float64") -> np.ndarray:
    """The gradient of c in `loss = c[k] * ...` with k = 0..N-1 and reduce sum: the
    per-sample values, computed by the vector loop."""
    m = lossc.compile(source, dims={"N": N}, dtype=dtype)
    theta = {p.name: np.ones(p.shape) for p in m.params}
    out = []
    for lo in range(0, len(x), N):
        chunk = x[lo:lo + N]
        pad = np.concatenate([chunk, np.full(N - len(chunk), 1.5)])
        _, g = m.value_and_grad(theta, x=pad, k=np.arange(N))
        out.append(g["c"][:len(chunk)])
    return np.concatenate(out)


@pytest.mark.parametrize("name", ["lgamma", "digamma", "erfc"])
def test_compiled_values_agree_with_scipy(name):
    x = _points(name)
    src = f"dim N\ninput x\ninput k: int\nparam c[N]\nreduce sum\nloss = c[k] * {name}(x)\n"
    got, ref = _compiled_values(src, x), SCIPY[name](x)
    assert np.all(np.abs(got - ref) <= _tolerance(name, x, ref)), name


@pytest.mark.parametrize("name", ["lgamma", "digamma", "erfc"])
def test_compiled_derivatives_agree_with_scipy(name):
    """d/dc of f(c[k] * 1) at c = x: the derivative rule, compiled (digamma's is
    trigamma)."""
    x = _points(name)
    m = lossc.compile(f"dim N\ninput k: int\nparam c[N]\nreduce sum\n"
                      f"loss = {name}(c[k])\n", dims={"N": N})
    got = []
    for lo in range(0, len(x), N):
        chunk = x[lo:lo + N]
        c = np.concatenate([chunk, np.full(N - len(chunk), 1.5)])
        got.append(m.value_and_grad({"c": c}, k=np.arange(N))[1]["c"][:len(chunk)])
    got, ref = np.concatenate(got), DERIVATIVE[name](x)
    # (the derivative's own cancellation next to its zeros: scale as for that function)
    inner = {"lgamma": "digamma", "digamma": "trigamma"}.get(name, name)
    tol = _tolerance(inner, x, ref) if name != "erfc" else 1e-12 * np.abs(ref)
    assert np.all(np.abs(got - ref) <= tol), name


@pytest.mark.parametrize("name", ["lgamma", "digamma", "trigamma", "polygamma2", "erfc"])
def test_reference_semantics_agree_with_scipy(name):
    x = np.concatenate([_points(name), [0.0, -0.0, -1.0, -7.0, np.inf, -np.inf, np.nan]])
    got, ref = OPS[name].eval({}, x), SCIPY[name](x)
    finite = np.isfinite(ref)
    tol = _tolerance(name, x[finite], ref[finite])
    assert np.all(np.abs(got[finite] - ref[finite]) <= 2 * tol), name
    # poles and infinities as SciPy has them, signs included
    np.testing.assert_array_equal(got[~finite], ref[~finite])


def test_xlogy_values_and_gradients():
    """x * log(y), 0 where x = 0, even at y = 0; d/dx = log(y), d/dy = x / y and 0
    where x = 0."""
    x = np.array([0.0, 0.0, 2.0, 0.5, 3.0, 0.0])
    y = np.array([0.0, 2.5, 3.0, 1e-300, 7.0, np.inf])
    m = lossc.compile("param a\nparam b\nloss = xlogy(a, b)\n")
    for a, b in zip(x, y):
        v, g = m.value_and_grad({"a": a, "b": b})
        assert v == pytest.approx(sp.xlogy(a, b), rel=1e-15)
        with np.errstate(divide="ignore"):
            assert g["a"] == pytest.approx(np.log(b), rel=1e-15)
        assert g["b"] == pytest.approx(a / b if a else 0.0, rel=1e-15)
    # the vector loop: per-sample x and y (finite: d(b * y)/db = y), the gradient in b
    # summed over the samples
    m = lossc.compile("input x\ninput y\nparam b = 1\nreduce sum\nloss = xlogy(x, b * y)\n")
    xs, ys = np.tile(x[:-1], 5), np.tile(y[:-1], 5)
    v, g = m.value_and_grad({"b": 1.0}, x=xs, y=ys)
    assert v == pytest.approx(np.sum(sp.xlogy(xs, ys)), rel=1e-14)
    assert g["b"] == pytest.approx(np.sum(xs), rel=1e-14)
    np.testing.assert_array_equal(OPS["xlogy"].eval({}, x, y), sp.xlogy(x, y))


def test_xlogy_gradient_in_x_is_log_y():
    m = lossc.compile("param z = 0\nparam q = 0\nhyper zero = 0\n"
                      "loss = xlogy(z, 2.5) + xlogy(zero, q)\n")
    v, g = m.value_and_grad({"z": 0.0, "q": 0.0})
    assert v == 0.0 and g["z"] == pytest.approx(np.log(2.5), rel=1e-15) and g["q"] == 0.0


def test_float32_widens():
    x = np.linspace(0.1, 30, 2 * N)
    src = "dim N\ninput x\ninput k: int\nparam c[N]\nreduce sum\nloss = c[k] * lgamma(x)\n"
    got = _compiled_values(src, x, dtype="float32")
    np.testing.assert_allclose(got, sp.gammaln(x).astype(np.float32), rtol=2e-7, atol=1e-7)


def test_no_libm_call_for_special_functions():
    """Inline vector code: the optimized IR calls no C function for them."""
    from lossc.compiler import compile_source
    c = compile_source("input x\nparam a\nloss = lgamma(a + x) + digamma(a * x) + "
                       "erfc(x - a) + xlogy(x, a * a + 1)\n")
    ir_text = c.ir
    for fn in ("lgamma", "tgamma", "erfc", "@log(", "@llvm.log."):
        assert f"declare double @{fn}" not in ir_text and fn not in ir_text.split(
            "declare")[-1] or fn.startswith("@"), fn
    declared = [ln for ln in ir_text.splitlines() if ln.startswith("declare")]
    assert not any(("lgamma" in ln or "erfc" in ln or "@log" in ln) for ln in declared), declared


def test_latex_forms():
    from lossc.compiler import compile_source
    from lossc.ir.latex import to_latex
    c = compile_source("param a = 2\nparam b = 1\nloss = lgamma(a) + digamma(b) + erfc(a) "
                       "+ xlogy(a, b)\n")
    text = to_latex(c.stages["autodiff"])
    for part in ("loggamma", "polygamma}{\\left(0,", "erfc", "polygamma}{\\left(1,",
                 "\\text{otherwise}"):
        assert part in text, (part, text)
