"""lossc.laplace (lossc/optim/laplace.py): the inverse Hessian of a fitted `reduce sum`
negative log-likelihood gives the standard errors statsmodels reports; a singular or
indefinite Hessian is an error naming its directions; `lossc eval --stderr`."""
import subprocess
import sys

import numpy as np
import pytest

import lossc
from lossc.optim import save_params

sm = pytest.importorskip("statsmodels.api")

LOGIT = """
dim D = 3
input x[D]
input y
param w[D]
param b
reduce sum
z = dot(w, x) + b
loss = softplus(z) - y * z
"""

POISSON = """
dim D = 2
input x[D]
input count
param w[D]
param b
reduce sum
eta = dot(w, x) + b
loss = exp(eta) - count * eta
"""


def newton_fit(m, data, steps=40):
    """The minimum, by Newton's method on m.hessian (these objectives are convex)."""
    theta = {p.name: np.zeros(p.shape) for p in m.params}
    for _ in range(steps):
        _, g = m.value_and_grad(theta, **data)
        step = np.linalg.solve(m.hessian(theta, **data), m.pack_params(g))
        theta = m.unpack_params(m.pack_params(theta) - step)
        if np.max(np.abs(step)) < 1e-13:
            break
    return theta


def design(X):
    return np.hstack([X, np.ones((len(X), 1))])      # (w..., b): pack_params order


@pytest.fixture(scope="module")
def logit_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (rng.random(300) < 1 / (1 + np.exp(-(X @ [1.0, -0.7, 0.3] + 0.2)))) * 1.0
    m = lossc.compile(LOGIT, cache=False)
    data = {"x": X, "y": y}
    return m, data, newton_fit(m, data), sm.Logit(y, design(X)).fit(disp=0, tol=1e-14)


def test_logistic_standard_errors_are_statsmodels(logit_fit):
    m, data, theta, ref = logit_fit
    np.testing.assert_allclose(m.pack_params(theta), ref.params, rtol=1e-8)
    result = lossc.laplace(m, theta, data=data)
    np.testing.assert_allclose(result.cov, ref.cov_params(), rtol=1e-8)
    np.testing.assert_allclose(result.stderr["w"], ref.bse[:3], rtol=1e-8)
    assert result.stderr["b"].shape == ()
    assert float(result.stderr["b"]) == pytest.approx(ref.bse[3], rel=1e-8)
    rows = result.table()
    assert [r[0] for r in rows] == ["w[0]", "w[1]", "w[2]", "b"]
    np.testing.assert_allclose([r[3] for r in rows], ref.tvalues, rtol=1e-8)
    np.testing.assert_allclose([r[4] for r in rows], ref.pvalues, rtol=1e-6)
    np.testing.assert_allclose([r[5:] for r in rows], ref.conf_int(), rtol=1e-8)


def test_poisson_standard_errors_are_statsmodels_glm():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(250, 2)) * 0.5
    counts = rng.poisson(np.exp(X @ [0.8, -0.4] + 1.0)).astype(float)
    m = lossc.compile(POISSON, cache=False)
    data = {"x": X, "count": counts}
    theta = newton_fit(m, data)
    ref = sm.GLM(counts, design(X), family=sm.families.Poisson()).fit(tol=1e-14)
    np.testing.assert_allclose(m.pack_params(theta), ref.params, rtol=1e-8)
    result = lossc.laplace(m, theta, data=data)
    np.testing.assert_allclose(m.pack_params(result.stderr), ref.bse, rtol=1e-8)


def test_hyperparameters_reach_the_hessian():
    m = lossc.compile("param a\nhyper k = 1\nloss = k * a ^ 2\n", cache=False)
    assert lossc.laplace(m, {"a": 0.0}, hypers={"k": 2.0}).cov[0, 0] == pytest.approx(0.25)
    assert lossc.laplace(m, {"a": 0.0}).cov[0, 0] == pytest.approx(0.5)


def test_collinear_inputs_are_named_as_a_flat_direction(logit_fit):
    m, data, theta, _ = logit_fit
    X = data["x"].copy()
    X[:, 2] = X[:, 0] - X[:, 1]
    with pytest.raises(lossc.LaplaceError) as info:
        lossc.laplace(m, theta, data={"x": X, "y": data["y"]})
    message = str(info.value)
    assert message.startswith("the Hessian of the objective is singular")
    assert "\n" not in message
    # the null direction: w[0] - w[1] - w[2] (normalized), b not in it
    assert "along 0.577 w[0] - 0.577 w[1] - 0.577 w[2] (eigenvalue" in message
    assert "flat)" in message


def test_a_saddle_is_named_as_a_direction_that_curves_down():
    m = lossc.compile("param a\nparam c\nloss = a ^ 2 + a * c - c ^ 2\n", cache=False)
    with pytest.raises(ValueError, match=r"indefinite: the parameters are not a minimum"
                                         r".*: along 0\.23 a - 0\.973 c \(eigenvalue "
                                         r"-1 times the largest, curves down\)$"):
        lossc.laplace(m, {"a": 0.0, "c": 0.0})


def test_an_unused_parameter_is_named():
    with pytest.warns(lossc.LosscWarning):
        m = lossc.compile("param a\nparam unused\nloss = a ^ 2\n", cache=False)
    with pytest.raises(ValueError, match=r"along 1 unused \(eigenvalue 0 times the largest, "
                                         r"flat\)"):
        lossc.laplace(m, {"a": 1.0, "unused": 0.0})


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lossc.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_eval_prints_the_coefficient_table(logit_fit, tmp_path):
    m, data, theta, ref = logit_fit
    (tmp_path / "m.loss").write_text(LOGIT)
    np.savez(tmp_path / "d.npz", **data)
    save_params(tmp_path / "p.npz", theta)
    out = run_cli("eval", str(tmp_path / "m.loss"), "--data", str(tmp_path / "d.npz"),
                  "--params", str(tmp_path / "p.npz"), "--stderr")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("objective ")
    assert lines[1].split() == ["coef", "std", "err", "z", "P>|z|", "[0.025", "0.975]"]
    for line, name, coef, se, z in zip(lines[3:], ["w[0]", "w[1]", "w[2]", "b"],
                                      ref.params, ref.bse, ref.tvalues):
        fields = line.split()
        assert fields[0] == name
        assert float(fields[1]) == pytest.approx(coef, rel=1e-3)
        assert float(fields[2]) == pytest.approx(se, rel=1e-3)
        assert float(fields[3]) == pytest.approx(z, abs=1e-3)
    X = data["x"].copy()
    X[:, 2] = 2 * X[:, 0]
    np.savez(tmp_path / "d.npz", x=X, y=data["y"])
    out = run_cli("eval", str(tmp_path / "m.loss"), "--data", str(tmp_path / "d.npz"),
                  "--params", str(tmp_path / "p.npz"), "--stderr")
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("lossc: error: the Hessian of the objective is singular")


def test_standard_errors_do_not_depend_on_the_units_of_a_feature():
    """A feature in dollars (mean 3e5, sd 1e5) beside a z-score: the Hessian's
    eigenvalues span 1e11, and one of 71 was taken as flat beside 7e11 ("singular")
    where statsmodels reports finite standard errors; the scaled Hessian's do not."""
    LOGIT2 = LOGIT.replace("dim D = 3", "dim D = 2")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 2)) * [1e5, 1.0] + [3e5, 0.0]
    y = (rng.random(500) < 1 / (1 + np.exp(-(X[:, 0] / 1e5 - 3 + X[:, 1])))) * 1.0
    ref = sm.Logit(y, design(X)).fit(disp=0, tol=1e-14, method="newton", maxiter=200)
    m = lossc.compile(LOGIT2, cache=False)
    theta = m.unpack_params(ref.params)
    result = lossc.laplace(m, theta, data={"x": X, "y": y})
    np.testing.assert_allclose(result.cov, ref.cov_params(), rtol=1e-6)
    np.testing.assert_allclose(m.pack_params(result.stderr), ref.bse, rtol=1e-6)


def test_float32_collinear_inputs_are_singular_not_invented_standard_errors():
    """x[2] = x[0] - x[1]: float64 said singular; float32's rounding left the
    smallest eigenvalue near 1e-7 of the largest, above float64's cutoff, and the
    standard errors of w came out near 1,000 (or the point "not a minimum")."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    X[:, 2] = X[:, 0] - X[:, 1]
    y = (rng.random(300) < 0.5) * 1.0
    for dtype in ("float64", "float32"):
        m = lossc.compile(LOGIT, dtype=dtype, cache=False)
        for b in (0.0, 0.2, 0.4, 0.6):
            theta = {"w": np.array([0.1, -0.1, 0.05]), "b": np.array(b)}
            with pytest.raises(lossc.LaplaceError, match="singular: the objective does "
                                                         "not identify the parameters"):
                lossc.laplace(m, theta, data={"x": X.astype(dtype), "y": y.astype(dtype)})
