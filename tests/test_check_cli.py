"""`lossc check` at the point the user cares about: --params, --data, --hyper."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import SAMPLES
from lossc.cli import main


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_check_at_given_parameters(tmp_path):
    """seed.loss at (x1, x2) = (3, 1): d/dx1 = 1/x1 + x2, d/dx2 = x1 - cos(x2)."""
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"x1": 3.0, "x2": 1.0}))
    code, out = run("check", SAMPLES / "seed.loss", "--params", params)
    assert code == 0, out
    assert f"{1 / 3 + 1:.12f}"[:12] in out and f"{3 - np.cos(1.0):.12f}"[:12] in out
    assert "gradient check passed" in out


def test_check_on_given_data_parameters_and_hypers(tmp_path):
    m = lossc.compile(SAMPLES / "logistic.loss")
    rng = np.random.default_rng(3)
    D = m.params[0].shape[0]
    X, Y = rng.normal(size=(40, D)), (rng.random(40) < 0.5).astype(float)
    theta = {"w": rng.normal(size=D), "b": np.array(0.7)}
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    np.savez(tmp_path / "p.npz", **theta)
    code, out = run("check", SAMPLES / "logistic.loss", "--data", tmp_path / "d.npz",
                    "--params", tmp_path / "p.npz", "--hyper", "lam=0.25", "--batch", 30)
    assert code == 0, out
    want = m.loss(theta, x=X[:30], y=Y[:30], lam=0.25)
    assert f"objective = {want:.10g}" in out
    assert "(8 checked)" in out


def test_check_at_a_kink_says_so_and_takes_the_convention(tmp_path):
    """relu at its kink: the compiled gradient takes relu'(0) = 0 by convention, central
    differences see 1/2. The one-sided differences (0 and 1) show the kink: the check
    passes and says why (it reported a MISMATCH on a correct model)."""
    src = tmp_path / "kink.loss"
    src.write_text("param p = 1\nloss = relu(p) + abs(p - 1)\n")
    params = tmp_path / "at0.json"
    params.write_text(json.dumps({"p": 0.0}))
    code, out = run("check", src, "--params", params)
    assert code == 0 and "at a kink" in out and "passed" in out, out


def test_kinks_that_add_up_at_one_point_pass_between_the_one_sided_differences(tmp_path):
    """relu(b) + abs(b) at 0: the one-sided differences are 2 and -1, the compiled
    gradient relu'(0) + abs'(0) = 0 is neither but lies between them (a subgradient):
    it passes. max(q, 1) + 2 min(q, 1) at q = 1 takes both ties' first arguments, 3,
    outside the differences (1 and 2): a MISMATCH, said to be at a kink, and no line
    says it is between them."""
    src = tmp_path / "sum.loss"
    src.write_text("param b = 0\nloss = relu(b) + abs(b) + 0.5 * max(b, 0)\n")
    code, out = run("check", src)
    assert code == 0 and "lies between them" in out and "passed" in out, out
    src.write_text("param q = 1\nloss = max(q, 1) + min(q, 1) * 2\n")
    code, out = run("check", src)
    assert code == 1 and "MISMATCH" in out and "lies between" not in out, out
    assert "outside the one-sided differences" in out, out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_passes_every_sample_and_a_large_objective(tmp_path, dtype):
    """Steps taken in the model's dtype and a tolerance for the objective's rounding:
    in float32 every sample was a MISMATCH (steps of 1e-6 rounded away), and so was
    1e9 + x^2 in float64 (3.9935 for 4)."""
    big = tmp_path / "big.loss"
    big.write_text("param x = 2\nloss = 1e9 + x ^ 2\n")
    for f in sorted(SAMPLES.glob("*.loss")) + [big] * (dtype == "float64"):
        code, out = run("check", f, "--dtype", dtype)
        assert code == 0 and "gradient check passed" in out, (f, out)


@pytest.mark.parametrize("dtype, eps", [("float32", None), ("float64", "1e-17"),
                                        ("float64", "1e-320")])
def test_a_step_the_objective_cannot_resolve_judges_nothing_and_fails(tmp_path, dtype, eps):
    """Where the objective's rounding over the step allows any gradient of an element's
    size (1e9 + x^2 in float32, whose ulp there is 64; --eps 1e-17, or one so small
    that x + h is x), the element fails and the report says to take a larger step.
    Its tolerance had grown with it, and a gradient of 3 passed a difference of 0."""
    src = tmp_path / "m.loss"
    src.write_text("param x = 2\nparam b = 0\nloss = 1e9 + x ^ 2 + 3 * b\n"
                   if eps is None else "param x = 2\nparam b = 0\nloss = 1 + x ^ 2 + 3 * b\n")
    code, out = run("check", src, "--dtype", dtype, *(["--eps", eps] if eps else []))
    assert code == 1 and "FAILED" in out and "not resolved" in out, out
    assert "Warning" not in out, out


@pytest.mark.parametrize("dtype, error", [("float64", 1e-3), ("float64", -1e-4),
                                          ("float32", 1e-2), ("float32", -5e-3)])
def test_check_finds_a_gradient_off_by_a_little(monkeypatch, dtype, error):
    """One element of the compiled gradient off by 0.1% or 0.01% (float32: 1%, 0.5%) of
    max(1, |g|) is reported: the tolerances are not so loose that a wrong gradient
    passes."""
    from lossc.check import gradient_check
    m = lossc.compile((SAMPLES / "logistic.loss").read_text(), dtype=dtype, cache=False)
    assert gradient_check(m)["ok"]
    right = m.value_and_grad_flat

    def wrong(theta, data=None, *args, **kw):
        value, grad = right(theta, data, *args, **kw)
        grad = grad.copy()
        grad[1] += error * max(1.0, abs(grad[1]))
        return value, grad
    monkeypatch.setattr(m, "value_and_grad_flat", wrong)
    report = gradient_check(m)
    assert not report["ok"] and not report["rows"][0]["ok"]


def test_check_with_a_bad_point_is_a_one_line_error(tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"w": [1.0, 2.0]}))
    code, out = run("check", SAMPLES / "logistic.loss", "--params", params)
    assert code == 1 and "lossc: error:" in out and "Traceback" not in out
    code, out = run("check", SAMPLES / "logistic.loss", "--data", tmp_path / "none.csv")
    assert code == 1 and "lossc: error:" in out


@pytest.mark.parametrize("index", ["i + 1", "i * 2", "i - 4", "2 * i - 3"])
def test_the_random_batch_draws_int_inputs_its_index_arithmetic_takes(tmp_path, index):
    """Int inputs are drawn below the smallest size they index: P[i + 1] then went out
    of range (an error on a valid model without --data). Samples out of range are
    drawn again, and the check runs."""
    src = tmp_path / "idx.loss"
    src.write_text(f"dim N = 5\ninput i: int\nparam P[N] = normal(0, 1)\n"
                   f"loss = P[{index}] ^ 2 + P[i]\n")
    code, out = run("check", src, "--batch", "40")
    assert code == 0 and "gradient check passed" in out, out


def test_a_random_batch_no_int_value_fits_is_an_error_at_once(tmp_path):
    """P[i - 10] of P[5]: no draw fits. The first sample that fails every redraw ends
    the redrawing (2,000 samples took 26 s of redraws), and the check reports the
    index out of range in one line."""
    src = tmp_path / "idx.loss"
    src.write_text("dim N = 5\ninput i: int\nparam P[N] = normal(0, 1)\n"
                   "loss = P[i - 10] ^ 2\n")
    from lossc.check import REDRAWS, random_batch
    m = lossc.compile(src.read_text(), cache=False)
    calls = []
    loss_flat = m.loss_flat
    m.loss_flat = lambda *a: calls.append(1) or loss_flat(*a)
    random_batch(m, 2000, 0, m.pack_params(m.init_params(0)))
    assert len(calls) == 1 + REDRAWS
    code, out = run("check", src, "--batch", "2000")
    assert code == 1 and "index i - 10" in out and "out of range" in out, out


def test_check_makes_a_random_batch_for_an_int_vector_input(tmp_path):
    """The random batch gives an int vector input its (B, L) shape (it was (B,))."""
    model = tmp_path / "bag.loss"
    model.write_text("dim L = 3\ninput tok[L]: int\ninput y\nparam E[5, 2] = normal(0, 1)\n"
                     "param w[2] = 1\nloss = (dot(w, mean(E[tok], axis=0)) - y) ^ 2\n")
    code, out = run("check", model)
    assert code == 0 and "gradient check passed" in out, out


def _wrong_gradient(monkeypatch, m, change):
    right = m.value_and_grad_flat

    def wrong(theta, data=None, *args, **kw):
        value, grad = right(theta, data, *args, **kw)
        return value, change(grad.copy())
    monkeypatch.setattr(m, "value_and_grad_flat", wrong)


@pytest.mark.parametrize("change", [lambda g: -g, lambda g: 0 * g, lambda g: 50 * g])
def test_check_near_a_minimum_does_not_pass_a_wrong_gradient(monkeypatch, change):
    """At trained parameters (README: check at the point you care about) every element
    of a mean objective's gradient is far below 1, the floor the tolerance had: a
    negated, zero or 50 times gradient passed."""
    from lossc.check import gradient_check
    m = lossc.compile(SAMPLES / "logistic.loss", cache=False)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, m.params[0].shape[0]))
    y = (rng.random(200) < 1 / (1 + np.exp(-X[:, 0]))) * 1.0
    data = {"x": X, "y": y}
    theta = lossc.train(m, data=data, optimizer=lossc.LBFGS(tol_grad=1e-7)).params
    _wrong_gradient(monkeypatch, m, change)
    assert not gradient_check(m, theta=theta, data=data)["ok"]


@pytest.mark.parametrize("error", [0, 1e-4, 3e-3])
def test_check_tells_curvature_from_a_kink(monkeypatch, error):
    """Features near 1e4 give the objective a curvature whose one-sided differences
    differ by more than the tolerance: taken for a kink, anything between them passed
    (0.3% off) and the report named a kink in a smooth model."""
    from lossc.check import format_check, gradient_check
    m = lossc.compile("dim D = 3\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
                      "z = dot(w, x) + b\nloss = softplus(z) - y * z\n", cache=False)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(50, 3)) * 1e4, "y": (rng.random(50) < 0.5) * 1.0}
    theta = {"w": np.array([0.5, -0.3, 0.2]) / 1e4, "b": np.array(0.1)}
    if error:
        def change(g):
            g[0] += error * abs(g[0])
            return g
        _wrong_gradient(monkeypatch, m, change)
    report = gradient_check(m, theta=theta, data=data)
    assert report["ok"] == (error == 0), format_check(m, report)
    assert report["rows"][0]["kinks"] == 0


def test_check_of_a_smooth_function_with_a_large_third_derivative_passes(tmp_path):
    """sin(1e5 x): the central difference at the default step is off by 1e-4 of the
    gradient (h^2 f'''); the differences at h and h/4 extrapolated are not."""
    src = tmp_path / "osc.loss"
    src.write_text("param x = 0.3\nloss = sin(100000 * x)\n")
    code, out = run("check", src)
    assert code == 0 and "kink" not in out, out


@pytest.mark.parametrize("source, words", [
    ("param x = 1e-7\nloss = log(x)\n", "not finite a step away (the edge of a domain"),
    ("param x = -1\nloss = log(x)\n", "the objective is nan at these parameters"),
    ("param x = 1e200\nloss = x ^ 2\n", "the objective is inf at these parameters")])
def test_check_says_why_where_the_objective_is_not_finite(tmp_path, source, words):
    """log(x) at 1e-7 (x - h < 0 at the default step), a NaN or an infinite objective:
    "MISMATCH ... FAILED" alone, or "take a larger --eps", which cannot help."""
    src = tmp_path / "m.loss"
    src.write_text(source)
    code, out = run("check", src)
    assert code == 1 and words in out and "larger --eps" not in out, out


def test_a_kink_between_a_quarter_step_and_a_step_away_is_not_mistaken(tmp_path):
    """abs(p - c) with c = 5e-7 at p = 0 (the default step 1e-6 crosses the kink, a
    quarter of it does not): the sides at the quarter step agree, and the extrapolation
    mixed in the step that crossed it (-1.0333 for -1)."""
    src = tmp_path / "m.loss"
    src.write_text("param p\nhyper c = 5e-7\nloss = abs(p - c)\n")
    code, out = run("check", src)
    assert code == 0 and "gradient check passed" in out, out


def test_a_step_that_rounds_to_nothing_says_to_take_a_larger_step(tmp_path):
    """--eps 1e-17 at x = 1: x + h is x, the difference 0 / 0; that is a step too small,
    not an objective that is not finite a step away."""
    src = tmp_path / "m.loss"
    src.write_text("param p = 1\nloss = p ^ 2\n")
    code, out = run("check", src, "--eps", "1e-17")
    assert code == 1 and "take a larger --eps" in out and "not finite" not in out, out


def test_check_at_a_minimum_is_inconclusive_not_passed(tmp_path):
    """Every element within its tolerance of 0: a negated gradient would pass too."""
    from lossc.check import format_check, gradient_check
    m = lossc.compile("param p = 1e-9\nparam q = -2e-9\nloss = p ^ 2 + q ^ 2\n",
                      cache=False)
    report = gradient_check(m)
    assert not report["ok"] and report["inconclusive"]
    assert format_check(m, report).endswith("gradient check INCONCLUSIVE")
