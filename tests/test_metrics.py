"""lossc.optim.metrics: rmse, mae, r2, logloss and auc against scikit-learn's, and how
`metric` and `lossc eval --metric` choose the output and the label they compare."""
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import metrics as skm

import lossc
from lossc.cli import main
from lossc.optim import metrics as lm


def _regression(seed, n=200):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return y, y + rng.normal(scale=0.3, size=n)


def _binary(seed, n=300, levels=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    p = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)
    if levels:                                  # few distinct scores: many ties
        p = np.round(p * (levels - 1)) / (levels - 1)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_agree_with_sklearn(seed):
    y, pred = _regression(seed)
    assert lm.rmse(y, pred) == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)),
                                             rel=1e-12)
    assert lm.mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert lm.r2(y, pred) == pytest.approx(skm.r2_score(y, pred), rel=1e-12)


def test_regression_metrics_of_a_constant_label_agree_with_sklearn():
    y = np.full(10, 2.5)
    for pred in (y.copy(), y + np.linspace(-1, 1, 10)):
        assert lm.r2(y, pred) == skm.r2_score(y, pred)            # 1.0, then 0.0
        assert lm.rmse(y, pred) == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
        assert lm.mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred))
    assert lm.r2(y, y) == 1.0 and lm.r2(y, y + 1) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logloss_agrees_with_sklearn(seed, dtype):
    y, p = _binary(seed)
    p = p.astype(dtype)
    p[:3] = [0.0, 1.0, 0.5]                     # clipped to [eps, 1 - eps] as sklearn does
    want = skm.log_loss(y, p, labels=[0, 1])
    assert lm.logloss(y, p) == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)


def test_logloss_of_a_constant_label_agrees_with_sklearn():
    y, p = np.ones(8), np.linspace(0.1, 0.9, 8)
    assert lm.logloss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), rel=1e-12)


def test_multiclass_logloss_agrees_with_sklearn():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(100, 4))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, size=100)
    y[:4] = 2                                   # (a class may also be absent: labels=)
    assert lm.logloss(y, p) == pytest.approx(skm.log_loss(y, p, labels=range(4)), rel=1e-12)


@pytest.mark.parametrize("levels", [None, 2, 3, 11])
@pytest.mark.parametrize("seed", [0, 1])
def test_auc_agrees_with_sklearn_with_ties(seed, levels):
    y, p = _binary(seed, levels=levels)
    if levels:
        assert len(np.unique(p)) <= levels
    assert lm.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    # a score need not be a probability
    assert lm.auc(y, 10 * p - 3) == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)


def test_auc_of_all_tied_scores_is_one_half():
    y = np.array([0, 1, 0, 1, 1.0])
    assert lm.auc(y, np.zeros(5)) == skm.roc_auc_score(y, np.zeros(5)) == 0.5


def test_auc_of_a_constant_label_is_nan_as_in_sklearn():
    y, p = np.zeros(6), np.linspace(0, 1, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(skm.roc_auc_score(y, p))
    assert np.isnan(lm.auc(y, p))


@pytest.mark.parametrize("call, match", [
    (lambda: lm.rmse([1.0, 2.0], [1.0]), "shape"),
    (lambda: lm.mae([], []), "no samples"),
    (lambda: lm.r2([1.0, np.nan], [1.0, 2.0]), "NaN"),
    (lambda: lm.auc([0, 2, 1], [0.1, 0.2, 0.3]), "must be 0 or 1, found 2"),
    (lambda: lm.logloss([0, 1], [0.5, 1.5]), r"in \[0, 1\], found 1.5"),
    (lambda: lm.logloss([0, 3], np.full((2, 3), 1 / 3)), "integers 0..2"),
])
def test_bad_arrays_are_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------- choosing output and label

REGRESSION = """dim D = 3
input x[D]
input y
param w[D]
param b
loss = (dot(w, x) + b - y) ^ 2
output mu = dot(w, x) + b
"""

CLASSIFIER = """dim D = 3
input x[D]
input y
param w[D]
param b
z = dot(w, x) + b
loss = softplus(z) - y * z
output logit = z
output chance = sigmoid(z)
"""


def _data(seed=0, n=60, binary=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    signal = x @ np.array([1.0, -2.0, 0.5]) + 0.3
    y = (signal + rng.normal(size=n) > 0).astype(float) if binary else \
        signal + 0.1 * rng.normal(size=n)
    return {"x": x, "y": y}


def _params(m):
    return {"w": np.array([0.9, -1.8, 0.4]), "b": np.array(0.2)}


def test_metric_uses_the_only_scalar_output_and_y():
    m = lossc.compile(REGRESSION)
    data, theta = _data(), _params(None)
    pred = data["x"] @ theta["w"] + theta["b"]
    for name, want in (("rmse", np.sqrt(skm.mean_squared_error(data["y"], pred))),
                       ("mae", skm.mean_absolute_error(data["y"], pred)),
                       ("r2", skm.r2_score(data["y"], pred))):
        got = lossc.optim.metric(m, theta, data, name)
        assert (got.output, got.label) == ("mu", "y")
        assert got.value == pytest.approx(want, rel=1e-12)


def test_probability_metrics_take_the_only_output_in_0_1():
    m = lossc.compile(CLASSIFIER)
    data, theta = _data(binary=True), _params(None)
    p = 1 / (1 + np.exp(-(data["x"] @ theta["w"] + theta["b"])))
    got = lossc.optim.metric(m, theta, data, "logloss")
    assert got.output == "chance"
    assert got.value == pytest.approx(skm.log_loss(data["y"], p), rel=1e-10)
    got = lossc.optim.metric(m, theta, data, "auc")
    assert got.output == "chance" and got.value == pytest.approx(skm.roc_auc_score(data["y"], p))
    # a score chosen by name gives the same AUC
    assert lossc.optim.metric(m, theta, data, "auc", output="logit").value == got.value


def test_an_output_named_prob_is_the_probability():
    m = lossc.compile(CLASSIFIER.replace("output chance", "output prob")
                      + "output half = 0.5\n")
    got = lossc.optim.metric(m, _params(m), _data(binary=True), "logloss")
    assert got.output == "prob"


def test_a_softmax_output_gives_the_multiclass_logloss():
    m = lossc.compile("""dim K = 3
input x[2]
input label: int
param W[K, 2]
z = W @ x
loss = logsumexp(z) - z[label]
output p = softmax(z)
""")
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=(40, 2)), "label": rng.integers(0, 3, size=40)}
    theta = {"W": rng.normal(size=(3, 2))}
    got = lossc.optim.metric(m, theta, data, "logloss")
    assert (got.output, got.label) == ("p", "label")
    p = m.predict(theta, **data)["p"]
    assert got.value == pytest.approx(skm.log_loss(data["label"], p, labels=range(3)))
    # the logloss is the mean loss of this model
    assert got.value == pytest.approx(m.loss(theta, **data), rel=1e-12)


@pytest.mark.parametrize("source, metric_name, kwargs, words", [
    (REGRESSION.split("output")[0], "rmse", {}, "declares no outputs"),
    (REGRESSION + "output twice = 2 * mu\n", "r2", {},
     "cannot tell which output to use among the scalar outputs mu, twice; name one with "
     "--output"),
    (CLASSIFIER + "output other = sigmoid(2 * z)\n", "auc", {},
     "among the outputs in [0, 1] chance, other"),
    (REGRESSION, "logloss", {}, "none of the outputs (mu) is one of the outputs in [0, 1]"),
    (REGRESSION, "rmse", {"output": "nope"}, "no output named 'nope'; the model's outputs "
                                              "are mu"),
    (REGRESSION + "output v = [mu, 1]\n", "mae", {"output": "v"},
     "mae takes a scalar; output 'v' has shape [2]"),
    (REGRESSION.replace("input y", "input t").replace("- y", "- t"), "rmse", {},
     "cannot tell which input holds the labels (no input named y or label); name it with "
     "--label (label= in Python): one of t"),
    (REGRESSION, "rmse", {"label": "x"}, "input 'x' is not a scalar"),
    (REGRESSION, "f1", {}, "unknown metric 'f1'"),
])
def test_where_it_cannot_tell_it_names_the_candidates(source, metric_name, kwargs, words):
    m = lossc.compile(source)
    data = _data()
    if "input t" in source:
        data["t"] = data.pop("y")
    with pytest.raises(ValueError) as info:
        lossc.optim.metric(m, _params(m), data, metric_name, **kwargs)
    assert words in str(info.value)


# ------------------------------------------------------------------------ lossc eval --metric

@pytest.fixture
def files(tmp_path):
    for name, source in (("reg.loss", REGRESSION), ("clf.loss", CLASSIFIER)):
        (tmp_path / name).write_text(source)
    np.savez(tmp_path / "reg.npz", **_data())
    np.savez(tmp_path / "clf.npz", **_data(binary=True))
    np.savez(tmp_path / "p.npz", **_params(None))
    return tmp_path


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


def test_eval_prints_the_regression_metrics(files):
    d = files
    r = run("eval", d / "reg.loss", "--data", d / "reg.npz", "--params", d / "p.npz",
            "--metric", "rmse", "--metric", "mae", "--metric", "r2")
    assert r.exit_code == 0, r.output
    data, theta = _data(), _params(None)
    pred = data["x"] @ theta["w"] + theta["b"]
    lines = r.output.splitlines()
    assert lines[1] == f"rmse {np.sqrt(skm.mean_squared_error(data['y'], pred)):.6g} " \
                       "(output 'mu' against 'y')"
    assert lines[2].startswith(f"mae {skm.mean_absolute_error(data['y'], pred):.6g} ")
    assert lines[3].startswith(f"r2 {skm.r2_score(data['y'], pred):.6g} ")


def test_eval_prints_logloss_and_auc_and_takes_output(files):
    d = files
    r = run("eval", d / "clf.loss", "--data", d / "clf.npz", "--params", d / "p.npz",
            "--metric", "logloss", "--metric", "auc", "--metric", "accuracy")
    assert r.exit_code == 0, r.output
    assert "logloss " in r.output and "(output 'chance' against 'y')" in r.output
    assert "auc " in r.output and r.output.splitlines()[3].startswith("accuracy ")
    r2 = run("eval", d / "clf.loss", "--data", d / "clf.npz", "--params", d / "p.npz",
             "--metric", "auc", "--output", "logit")
    auc_line = [ln for ln in r.output.splitlines() if ln.startswith("auc")][0]
    assert r2.output.splitlines()[1] == auc_line.replace("chance", "logit")


def test_eval_says_auc_is_undefined_for_one_class(files):
    d = files
    data = _data(binary=True)
    np.savez(d / "ones.npz", x=data["x"], y=np.ones(len(data["y"])))
    r = run("eval", d / "clf.loss", "--data", d / "ones.npz", "--params", d / "p.npz",
            "--metric", "auc")
    assert r.exit_code == 0 and "auc undefined: the labels in 'y' hold one class only" \
        in r.output


@pytest.mark.parametrize("model, args, words", [
    ("reg.loss", ["--metric", "auc"], "none of the outputs (mu)"),
    ("clf.loss", ["--metric", "rmse"], "among the scalar outputs logit, chance"),
    ("reg.loss", ["--metric", "rmse", "--label", "nope"], "no input named 'nope'"),
    ("clf.loss", ["--metric", "logloss", "--output", "logit"], "probabilities must lie in"),
    ("clf.loss", ["--metric", "accuracy", "--output", "logit"],
     "--output logit: it picks the output of the metrics rmse, mae, r2, logloss, auc"),
    ("clf.loss", ["--output", "logit"], "give one with --metric"),
])
def test_eval_metric_mistakes_are_one_line(files, model, args, words):
    d = files
    data = "reg.npz" if model == "reg.loss" else "clf.npz"
    r = run("eval", d / model, "--data", d / data, "--params", d / "p.npz", *args)
    assert r.exit_code == 1 and words in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
