"""The cookbook (docs/cookbook.md, samples/cookbook/): each model trains with lossc.train
on its generator's data and recovers the generating parameters, or the optimum another
library finds for the same objective, within the tolerance docs/cookbook.md states."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import ROOT, SAMPLES
from lossc.cli import main
from lossc.optim import LBFGS, Adam, schedules
from lossc.optim.metrics import logloss

COOKBOOK = SAMPLES / "cookbook"
RECIPES = ("svm", "quantile", "negbin", "gaussian_nll", "gmm", "matrix_factorization",
           "bag_of_embeddings", "mlp_classifier", "focal", "ar", "random_intercept",
           "autoencoder")


def generator(name):
    """samples/cookbook/NAME.py, the data generator of NAME.loss."""
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", COOKBOOK / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit(name, data, optimizer=None, **options):
    """NAME.loss compiled and trained (L-BFGS to a small gradient unless told)."""
    m = lossc.compile(COOKBOOK / f"{name}.loss")
    if optimizer is None:
        optimizer = LBFGS()
        options.setdefault("tol_grad", 1e-9)
    result = lossc.train(m, data=data, optimizer=optimizer, seed=0, **options)
    assert result.ok, result.stopped_reason
    return m, result.params


def test_every_recipe_has_a_generator_and_a_test():
    models = {p.stem for p in COOKBOOK.glob("*.loss")}
    assert models == set(RECIPES)
    assert all((COOKBOOK / f"{name}.py").is_file() for name in RECIPES)
    tested = {n[len("test_"):] for n in globals() if n.startswith("test_")}
    assert set(RECIPES) <= tested
    doc = (ROOT / "docs" / "cookbook.md").read_text()
    # the doc shows each model as its file holds it
    assert all(f"`samples/cookbook/{name}.loss`:\n\n```\n"
               + (COOKBOOK / f"{name}.loss").read_text() + "```" in doc for name in RECIPES)


def test_svm():
    from sklearn.svm import LinearSVC
    data, _ = generator("svm").generate()
    m, p = fit("svm", data, epochs=200)
    lam, n = 0.01, len(data["y"])
    # mean squared hinge + lam |w|^2 is LinearSVC's |w|^2 / 2 + C sum(...) with C = 1/(2 lam n)
    svc = LinearSVC(loss="squared_hinge", C=1 / (2 * lam * n), fit_intercept=False,
                    dual=False, tol=1e-12, max_iter=100_000).fit(data["x"], data["y"])
    np.testing.assert_allclose(p["w"], svc.coef_[0], rtol=0, atol=1e-6)
    pred = m.predict(p, x=data["x"])
    np.testing.assert_array_equal(pred["label"], svc.predict(data["x"]))


def test_quantile():
    from sklearn.linear_model import QuantileRegressor
    data, _ = generator("quantile").generate()
    # the pinball loss is not smooth: full-batch Adam with a cosine decay to zero
    m, p = fit("quantile", data, Adam(lr=0.1), batch_size=None, epochs=3000,
               schedule=schedules.parse("cosine"))
    lp = QuantileRegressor(quantile=0.9, alpha=0, solver="highs").fit(data["x"], data["y"])
    np.testing.assert_allclose(p["w"], lp.coef_, rtol=0, atol=1e-3)
    assert abs(p["b"] - lp.intercept_) < 1e-3
    q = m.predict(p, x=data["x"])["quantile"]
    assert np.mean(data["y"] <= q) == pytest.approx(0.9, abs=0.01)


def test_negbin():
    import statsmodels.api as sm
    data, truth = generator("negbin").generate()
    m, p = fit("negbin", data, epochs=300)
    sm_fit = sm.NegativeBinomial(data["count"], sm.add_constant(data["x"]),
                                 loglike_method="nb2").fit(disp=0, method="newton",
                                                           maxiter=100, tol=1e-12)
    b, w, alpha = sm_fit.params[0], sm_fit.params[1:4], sm_fit.params[4]
    np.testing.assert_allclose(p["w"], w, rtol=0, atol=1e-6)
    assert abs(p["b"] - b) < 1e-6 and abs(np.exp(p["log_alpha"]) - alpha) < 1e-6
    assert m.loss(p, **data) * len(data["count"]) == pytest.approx(-sm_fit.llf, rel=1e-10)
    # and both are near the truth
    np.testing.assert_allclose(p["w"], truth["w"], atol=0.05)


def test_gaussian_nll():
    data, truth = generator("gaussian_nll").generate()
    m, p = fit("gaussian_nll", data, epochs=300)
    for name in ("w", "b", "v", "c"):
        np.testing.assert_allclose(p[name], truth[name], rtol=0, atol=0.05, err_msg=name)
    pred = m.predict(p, x=data["x"][:3])
    np.testing.assert_allclose(pred["sigma"], np.exp(data["x"][:3] @ p["v"] + p["c"]))


def test_gmm():
    from sklearn.mixture import GaussianMixture
    data, truth = generator("gmm").generate()
    m, p = fit("gmm", data, epochs=1000, tol_grad=1e-8)
    em = GaussianMixture(3, covariance_type="diag", reg_covar=0, tol=1e-12, max_iter=5000,
                         means_init=truth["mu"], random_state=0).fit(data["x"])
    ours, theirs = np.argsort(p["mu"][:, 0]), np.argsort(em.means_[:, 0])
    np.testing.assert_allclose(p["mu"][ours], em.means_[theirs], atol=1e-5)
    np.testing.assert_allclose(np.exp(p["log_s"][ours]), np.sqrt(em.covariances_[theirs]),
                               atol=1e-5)
    weights = np.exp(p["logit"]) / np.exp(p["logit"]).sum()
    np.testing.assert_allclose(weights[ours], em.weights_[theirs], atol=1e-5)
    pred = m.predict(p, **data)
    assert np.mean(pred["log_density"]) == pytest.approx(em.score(data["x"]), rel=1e-9)
    np.testing.assert_allclose(pred["resp"][:, ours], em.predict_proba(data["x"])[:, theirs],
                               atol=1e-4)


def test_matrix_factorization():
    data, truth = generator("matrix_factorization").generate()
    m, p = fit("matrix_factorization", data, epochs=2000, tol_grad=1e-8)
    full = truth["ratings"]
    users, items = np.indices(full.shape)
    completed = m.predict(p, u=users.ravel(), i=items.ravel())["predicted"].reshape(full.shape)
    unobserved = np.ones(full.shape, bool)
    unobserved[data["u"], data["i"]] = False
    rmse = np.sqrt(np.mean((completed - full)[unobserved] ** 2))
    assert rmse < 0.15, rmse                     # (the ratings' spread is 1.85)


def assert_near_the_best(label, prob, best):
    """Class probabilities `prob` on held-out data are nearly as good as those of the
    model that generated the labels, `best`: log loss within 0.03, accuracy within 0.02."""
    assert logloss(label, prob) < logloss(label, best) + 0.03
    accuracy = np.mean(prob.argmax(axis=1) == label)
    assert accuracy > np.mean(best.argmax(axis=1) == label) - 0.02


def test_bag_of_embeddings():
    gen = generator("bag_of_embeddings")
    data, truth = gen.generate()
    test, _ = gen.generate(n=3000, seed=1)
    m, p = fit("bag_of_embeddings", data, epochs=60, tol_grad=1e-7)
    prob = m.predict(p, tok=test["tok"])["prob"]
    bayes = np.exp(gen.bayes_log_posterior(test["tok"], truth["token_probabilities"]))
    assert_near_the_best(test["label"], prob, bayes)


def test_mlp_classifier():
    gen = generator("mlp_classifier")
    data, truth = gen.generate()
    test, _ = gen.generate(n=4000, seed=1)
    m, p = fit("mlp_classifier", data, epochs=150, tol_grad=1e-7)
    prob = m.predict(p, x=test["x"])["prob"]
    assert_near_the_best(test["label"], prob,
                         gen.teacher_probabilities(test["x"], truth["teacher"]))


def test_focal():
    from scipy.optimize import minimize
    gen = generator("focal")
    data, _ = gen.generate()
    m, p = fit("focal", data, epochs=300, tol_grad=1e-10)
    best = minimize(gen.focal_objective, np.zeros(5), args=(data["x"], data["y"]),
                    method="BFGS", options={"gtol": 1e-11})
    np.testing.assert_allclose(np.r_[p["w"], p["b"]], best.x, rtol=0, atol=1e-6)
    assert m.loss(p, **data) <= best.fun + 1e-12


def test_ar():
    from statsmodels.tsa.ar_model import AutoReg
    data, truth = generator("ar").generate()
    m, p = fit("ar", data, epochs=100, tol_grad=1e-10)
    ols = AutoReg(truth["series"], lags=3, trend="c").fit().params      # const, L1, L2, L3
    np.testing.assert_allclose(np.r_[p["c"], p["phi"]], ols, rtol=0, atol=1e-8)
    np.testing.assert_allclose(p["phi"], truth["phi"], atol=0.05)


def test_random_intercept():
    gen = generator("random_intercept")
    data, truth = gen.generate()
    m, p = fit("random_intercept", data, epochs=500)
    w, a = gen.posterior_mode(data["x"], data["g"], data["y"])
    np.testing.assert_allclose(p["w"], w, rtol=0, atol=1e-8)
    np.testing.assert_allclose(p["a"], a, rtol=0, atol=1e-8)
    # the prior shrinks the intercepts of small groups towards 0: closer than the truth
    assert np.max(np.abs(p["a"] - truth["a"])) < 0.5


def test_autoencoder():
    data, _ = generator("autoencoder").generate()
    m, p = fit("autoencoder", data, epochs=3000)
    x = data["x"] - data["x"].mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    # the optimum's error is the PCA residual, the variance beyond the 2 leading components
    assert m.loss(p, **data) == pytest.approx(np.sum(s[2:] ** 2) / len(x), rel=1e-8)
    # and the decoder spans the leading principal subspace (cosines of its angles: 1)
    cosines = np.linalg.svd(vt[:2] @ np.linalg.qr(p["Wd"])[0], compute_uv=False)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-6)
    pred = m.predict(p, **data)
    assert pred["embedding"].shape == (len(x), 2) and pred["reconstruction"].shape == x.shape


# ---------------------------------------------------------------- the commands the doc shows

def test_the_documented_commands(tmp_path):
    """docs/cookbook.md's session: the generator run as a script, lossc train, eval with
    metrics, and predict."""
    data = tmp_path / "gauss.npz"
    subprocess.run([sys.executable, str(COOKBOOK / "gaussian_nll.py"), str(data)],
                   check=True, capture_output=True, timeout=120)
    model, params = COOKBOOK / "gaussian_nll.loss", tmp_path / "gauss.params.npz"

    def run(*args):
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert "Traceback" not in r.output
        return r

    r = run("train", model, "--data", data, "--optimizer", "lbfgs", "--out", params, "-q")
    assert r.exit_code == 0, r.output
    r = run("eval", model, "--data", data, "--params", params, "--metric", "rmse")
    assert r.exit_code == 1 and "among the scalar outputs mu_hat, sigma" in r.output
    r = run("eval", model, "--data", data, "--params", params, "--metric", "rmse",
            "--metric", "r2", "--output", "mu_hat")
    assert r.exit_code == 0 and "rmse " in r.output and "r2 " in r.output, r.output
    r = run("predict", model, "--params", params, "--data", data, "--out",
            tmp_path / "pred.csv")
    assert r.exit_code == 0, r.output
    header = (tmp_path / "pred.csv").read_text().splitlines()[0]
    assert header == "mu_hat,sigma"
