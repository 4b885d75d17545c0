"""lossc.sklearn: LossRegressor and LossClassifier as scikit-learn estimators."""
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import lossc  # noqa: E402
from conftest import ROOT  # noqa: E402
from lossc.sklearn import LossClassifier, LossRegressor, models  # noqa: E402

# logistic regression as scikit-learn's LogisticRegression(C) writes it: C times the
# summed log-loss plus half the squared norm of w, the intercept unpenalized
LOGREG = """
dim D
input x[D]
input y
input sw
param w[D]
param b
hyper C = 1
reduce sum
z = dot(w, x) + b
loss = C * sw * (softplus(z) - y * z)
penalty = 0.5 * sum(w ^ 2)
output p1 = sigmoid(z)
output label = z > 0
"""

SOFTMAX = """
dim D
dim K
input x[D]
input y: int
input w
param W[K, D]
param c[K]
hyper lam = 1
reduce sum
z = W @ x + c
loss = w * (logsumexp(z) - z[y])
penalty = 0.5 * lam * sum(W ^ 2)
output prob = softmax(z)
"""

RIDGE = """
dim D
input x[D]
input y
input w
param v[D]
param b
hyper alpha = 1
reduce sum
r = dot(v, x) + b - y
loss = 0.5 * w * r ^ 2
penalty = 0.5 * alpha * sum(v ^ 2)
output yhat = dot(v, x) + b
"""


def logreg(**kw):
    return LossClassifier(LOGREG, predict="label", proba="p1", sample_weight="sw", **kw)


@parametrize_with_checks([
    LossClassifier(SOFTMAX, proba="prob", classes_dim="K", sample_weight="w",
                   random_state=0, tol_grad=1e-10),
    logreg(random_state=0, tol_grad=1e-10),
    LossRegressor(RIDGE, sample_weight="w", random_state=0, tol_grad=1e-10),
    LossClassifier(SOFTMAX, proba="prob", classes_dim="K", sample_weight="w",
                   optimizer="adam", lr=0.05, batch_size=32, epochs=50, random_state=0),
])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture
def breast_cancer():
    return load_breast_cancer(return_X_y=True)


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_logistic_regression_reaches_scikit_learns_coefficients(breast_cancer, C):
    X, y = breast_cancer
    ours = make_pipeline(StandardScaler(), logreg(C=C, tol_grad=1e-11)).fit(X, y)
    # (newton-cholesky: at tol=1e-12 scikit-learn's lbfgs itself is 1e-6 away)
    theirs = make_pipeline(StandardScaler(), LogisticRegression(
        C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)).fit(X, y)
    est, ref = ours[-1], theirs[-1]
    np.testing.assert_allclose(est.params_["w"], ref.coef_[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(est.params_["b"], ref.intercept_[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-7)
    assert ours.score(X, y) == theirs.score(X, y)


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_default_stopping_is_scikit_learns(breast_cancer, C):
    # by default L-BFGS stops as LogisticRegression's does (tol 1e-4 on the gradient
    # of its objective, which is this one divided by C and the number of samples):
    # about as many iterations, at any C, and the same predictions
    X, y = breast_cancer
    Xs = StandardScaler().fit_transform(X)
    ours = logreg(C=C).fit(Xs, y)
    theirs = LogisticRegression(C=C).fit(Xs, y)
    assert ours.result_.stopped == "tol_grad", ours.result_.stopped_reason
    assert abs(ours.n_iter_ - theirs.n_iter_[0]) <= 0.2 * theirs.n_iter_[0] + 2
    assert np.mean(ours.predict(Xs) != theirs.predict(Xs)) <= 0.01


class _Counted:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def compilations(monkeypatch, tmp_path):
    """Counts of lossc.compile calls and of front-end compilations, with a compile
    cache of the test's own and no model kept from earlier tests."""
    import lossc.compiler
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path))
    models.clear()
    counts = {"compile": _Counted(lossc.compile),
              "compile_source": _Counted(lossc.compiler.compile_source)}
    monkeypatch.setattr(lossc, "compile", counts["compile"])
    monkeypatch.setattr(lossc.compiler, "compile_source", counts["compile_source"])
    yield counts
    models.clear()


def test_a_grid_search_compiles_the_model_once(breast_cancer, compilations):
    X, y = breast_cancer
    search = GridSearchCV(make_pipeline(StandardScaler(), logreg()),
                          {"lossclassifier__C": [0.01, 0.1, 1, 10, 100]}, cv=5)
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 5
    assert compilations["compile"].calls == 1
    assert compilations["compile_source"].calls == 1
    assert search.best_score_ > 0.95


def test_clone_does_not_recompile(breast_cancer, compilations):
    X, y = breast_cancer
    X = StandardScaler().fit_transform(X)     # (unscaled, the fits take 1,000 iterations)
    first = logreg(C=0.5).fit(X[:100], y[:100])
    again = clone(first).fit(X[100:200], y[100:200])
    assert compilations["compile"].calls == 1
    assert again.model_ is not first.model_          # a Model of its own...
    assert again.model_.code is first.model_.code    # ...over the same machine code


def test_hypers_are_parameters(breast_cancer):
    X, y = breast_cancer
    est = logreg()
    assert est.get_params()["C"] == 1.0             # the file's default
    assert est.set_params(C=0.25).get_params()["C"] == 0.25
    assert clone(est).get_params()["C"] == 0.25
    with pytest.raises(ValueError, match="'Cc'.*hypers: C"):
        est.set_params(Cc=1)
    with pytest.raises(ValueError, match="'Cc' is not a hyper of the model"):
        logreg(Cc=1).fit(X, y)
    search = GridSearchCV(logreg(), {"C": [0.01, 1.0]}, cv=3).fit(
        StandardScaler().fit_transform(X), y)
    assert search.best_params_["C"] in (0.01, 1.0)


def test_a_hyper_named_like_an_estimator_parameter_is_refused(breast_cancer):
    X, y = breast_cancer
    src = LOGREG.replace("hyper C = 1", "hyper C = 1\nhyper lr = 0").replace(
        "C * sw", "(C + lr) * sw")
    with pytest.raises(ValueError, match="hyper 'lr' has the name of a parameter"):
        LossClassifier(src, proba="p1", sample_weight="sw").fit(X, y)
    # (set_params takes a name with __ for a nested estimator's parameter)
    nested = LOGREG.replace("C", "C__s")
    with pytest.raises(ValueError, match="hyper 'C__s' has '__' in its name"):
        LossClassifier(nested, proba="p1", sample_weight="sw").fit(X, y)


def test_the_hyper_reaches_the_objective(breast_cancer):
    X, y = breast_cancer
    Xs = StandardScaler().fit_transform(X)
    small, large = logreg(C=0.01).fit(Xs, y), logreg(C=100.0).fit(Xs, y)
    assert np.linalg.norm(small.params_["w"]) < np.linalg.norm(large.params_["w"]) / 5


def test_a_fitted_estimator_pickles_without_its_machine_code(breast_cancer, tmp_path):
    X, y = breast_cancer
    est = make_pipeline(StandardScaler(), logreg(C=0.5)).fit(X, y)
    assert "model_" not in est[-1].__getstate__()
    blob = tmp_path / "est.pkl"
    blob.write_bytes(pickle.dumps(est))
    np.save(tmp_path / "X.npy", X)
    code = f"""
        import pickle, numpy as np
        est = pickle.loads(open({str(blob)!r}, "rb").read())
        np.save({str(tmp_path / "p.npy")!r}, est.predict_proba(np.load({str(tmp_path / "X.npy")!r})))
        """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), est.predict_proba(X))
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_a_stream_continues_after_pickling():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.normal(size=50)
    est = LossRegressor(RIDGE, sample_weight="w", optimizer="adam", lr=0.1)
    est.partial_fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    est.partial_fit(X, y)
    again.partial_fit(X, y)         # Adam's moments came along
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def test_a_search_in_worker_processes(breast_cancer):
    X, y = breast_cancer
    Xs = StandardScaler().fit_transform(X)
    parallel = GridSearchCV(logreg(), {"C": [0.1, 1.0]}, cv=3, n_jobs=2).fit(Xs, y)
    serial = GridSearchCV(logreg(), {"C": [0.1, 1.0]}, cv=3).fit(Xs, y)
    np.testing.assert_array_equal(parallel.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])


def test_labels_map_to_the_models_classes():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 4], [4, 0], [-4, -4]])
    yi = rng.integers(0, 3, 300)
    X = centers[yi] + rng.normal(size=(300, 2))
    names = np.array(["cat", "dog", "emu"])
    for labels in (names[yi], np.array([3, 7, 10])[yi]):
        est = LossClassifier(SOFTMAX, proba="prob", classes_dim="K", sample_weight="w",
                             random_state=0).fit(X, labels)
        assert list(est.classes_) == sorted(set(labels))
        assert (est.predict(X) == labels).mean() > 0.95
        proba = est.predict_proba(X)
        assert proba.shape == (300, 3)
        np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], est.predict(X))
        assert est.params_["W"].shape == (3, 2)


def test_a_binary_model_refuses_three_classes():
    """With proba= or without: a real scalar y is two classes' 0/1 (class 2 reached the
    loss as y = 2, and predict never gave it)."""
    X = np.random.default_rng(0).normal(size=(30, 2))
    for est in (logreg(), LossClassifier(LOGREG, predict="label", sample_weight="sw")):
        with pytest.raises(ValueError, match="Only binary classification is supported"
                                             ".*3 classes"):
            est.fit(X, np.arange(30) % 3)
        est.fit(X, np.arange(30) % 2)


def test_sample_weight_reaches_the_objective_through_its_input(breast_cancer):
    X, y = breast_cancer
    Xs = StandardScaler().fit_transform(X)[:200]
    y = y[:200]
    weights = np.arange(200) % 3
    weighted = logreg(tol_grad=1e-10).fit(Xs, y, sample_weight=weights)
    repeated = logreg(tol_grad=1e-10).fit(np.repeat(Xs, weights, axis=0),
                                          np.repeat(y, weights))
    np.testing.assert_allclose(weighted.params_["w"], repeated.params_["w"], atol=1e-7)


def test_sample_weight_without_an_input_for_it_is_refused(breast_cancer):
    X, y = breast_cancer
    src = LOGREG.replace("input sw\n", "").replace("C * sw *", "C *")
    est = LossClassifier(src, proba="p1")
    with pytest.raises(ValueError, match="names no input of the model for it.*"
                                         "sample_weight='w'"):
        est.fit(X, y, sample_weight=np.ones(len(y)))
    assert est.fit(StandardScaler().fit_transform(X), y).score(
        StandardScaler().fit_transform(X), y) > 0.95


@pytest.mark.parametrize("params, message", [
    ({"X": "features"}, "X='features' is not an input of the model"),
    ({"proba": "prob"}, "proba='prob' is not an output of the model"),
    ({"predict": None, "proba": None}, "name the output that gives the class"),
    ({"sample_weight": None}, "input 'sw' is none of X='x', y='y'"),
    ({"optimizer": "newton"}, "unknown optimizer 'newton'"),
    ({"train_options": {"seed": 3}}, "train_options may not set 'seed'"),
])
def test_a_model_that_does_not_fit_the_parameters_is_a_clear_error(params, message):
    X = np.random.default_rng(0).normal(size=(20, 3))
    est = LossClassifier(LOGREG, **{"predict": "label", "proba": "p1",
                                    "sample_weight": "sw", **params})
    with pytest.raises(ValueError, match=message):
        est.fit(X, np.arange(20) % 2)


def test_a_mistake_in_the_model_is_reported_with_its_position():
    X = np.random.default_rng(0).normal(size=(20, 3))
    est = LossRegressor(RIDGE.replace("dot(v, x) + b - y", "dot(vv, x) + b - y"),
                        sample_weight="w")
    with pytest.raises(lossc.CompileError, match=r"<string>:10:9: error: unknown "
                                                 r"name 'vv'"):
        est.fit(X, np.arange(20.0))


def test_partial_fit_takes_the_optimizers_steps_over_a_stream():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.5
    est = LossRegressor(RIDGE, sample_weight="w", optimizer="adam", lr=0.1,
                        batch_size=20, random_state=0, alpha=0.0)
    chunks = [(X[k:k + 40], y[k:k + 40]) for k in range(0, 120, 40)]
    for Xc, yc in chunks:
        est.partial_fit(Xc, yc)
    # the same steps by hand: Adam's state carries across the chunks
    m = lossc.compile(RIDGE, dims={"D": 4})
    theta = m.pack_params(m.init_params(0))
    opt = lossc.Adam(lr=0.1)
    for Xc, yc in chunks:
        for k in range(0, 40, 20):
            _, g = m.value_and_grad_flat(theta, {"x": Xc[k:k + 20], "y": yc[k:k + 20],
                                                 "w": np.ones(20)}, hypers={"alpha": 0.0})
            opt.step(theta, g)
    np.testing.assert_array_equal(m.pack_params(est.params_), theta)
    assert est.n_iter_ == 3 and len(est.history_) == 3
    for _ in range(60):
        for Xc, yc in chunks:
            est.partial_fit(Xc, yc)
    assert est.score(X, y) > 0.999


def test_partial_fit_exists_for_first_order_optimizers_only():
    assert not hasattr(LossRegressor(RIDGE), "partial_fit")
    assert not hasattr(LossRegressor(RIDGE, optimizer=lossc.NewtonCG()), "partial_fit")
    assert hasattr(LossRegressor(RIDGE, optimizer="sgd"), "partial_fit")


def test_partial_fit_of_a_classifier_needs_the_classes_first():
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    est = LossClassifier(SOFTMAX, proba="prob", classes_dim="K", sample_weight="w",
                         optimizer="sgd", lr=0.01)
    with pytest.raises(ValueError, match="classes must be given on the first call"):
        est.partial_fit(X, y)
    est.partial_fit(X[:10], y[:10], classes=["no", "yes", "maybe"])
    assert list(est.classes_) == ["maybe", "no", "yes"]
    est.partial_fit(X[10:], y[10:])
    with pytest.raises(ValueError, match="label 'perhaps'"):
        est.partial_fit(X[:2], np.array(["perhaps", "no"]))
    est.partial_fit(X[10:], y[10:], classes=["yes", "maybe", "no"])
    with pytest.raises(ValueError, match="is not the same as on the first call"):
        est.partial_fit(X[10:], y[10:], classes=["no", "yes", "maybe", "perhaps"])
    assert list(est.classes_) == ["maybe", "no", "yes"]


def test_partial_fit_that_diverges_keeps_the_parameters():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    est = LossRegressor(RIDGE, sample_weight="w", optimizer="sgd", lr=1e200)
    est.partial_fit(X, y)
    before = {k: v.copy() for k, v in est.params_.items()}
    with pytest.raises(ValueError, match="not finite at the batch starting at sample 0"):
        est.partial_fit(X * 1e200, y)
    for k in before:
        np.testing.assert_array_equal(est.params_[k], before[k])


@pytest.mark.parametrize("size", [-3, 2.5, "big", True])
def test_partial_fit_checks_batch_size_as_fit_does(size):
    """partial_fit took no step with batch_size=-3 (fit refuses it), cut 2.5 to 2 and
    gave Python's own int() error for a word."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    est = LossRegressor(RIDGE, sample_weight="w", optimizer="sgd", lr=0.1, batch_size=size)
    for fit in (est.fit, est.partial_fit):
        with pytest.raises(ValueError, match=f"batch_size must be .*got {size!r}"):
            fit(X, y)


def test_an_interrupted_partial_fit_leaves_the_optimizers_state_as_it_was():
    """Ctrl-C in the third batch of a partial_fit restored params_ but left Adam's
    step count and moments advanced by the first two batches."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    est = LossRegressor(RIDGE, sample_weight="w", optimizer="adam", lr=0.01, batch_size=10)
    est.partial_fit(X, y)
    t, state = est.optimizer_.t, [a.copy() for a in est.optimizer_.state.values()]
    model, calls = est.model_, [0]
    real = model.value_and_grad_flat

    def interrupted_third(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    model.value_and_grad_flat = interrupted_third
    try:
        with pytest.raises(KeyboardInterrupt):
            est.partial_fit(X, y)
    finally:
        del model.value_and_grad_flat
    assert calls[0] == 3 and est.optimizer_.t == t == 4
    for before, after in zip(state, est.optimizer_.state.values()):
        np.testing.assert_array_equal(before, after)


def test_a_classifiers_predict_output_must_be_a_scalar():
    """A vector output as predict= was taken at fit, and every predict failed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, size=30)
    with pytest.raises(ValueError, match="output 'prob' \\(predict=\\) must be a scalar"):
        LossClassifier(SOFTMAX, predict="prob", sample_weight="w",
                       classes_dim="K").fit(X, y)


def test_a_fit_that_starts_at_its_stopping_test_warns():
    """Targets of 1e-5 meet a regressor's absolute default test at zero parameters:
    the fit returned the zeros (R^2 = 0) without a word."""
    from sklearn.exceptions import ConvergenceWarning
    rng = np.random.RandomState(0)
    X = rng.randn(200, 3)
    y = 1e-5 * (X @ [1.0, -2, 3])
    with pytest.warns(ConvergenceWarning, match="the fit took no step: the initial"):
        est = LossRegressor(RIDGE, sample_weight="w").fit(X, y)
    assert (est.result_.stopped, est.n_iter_) == ("tol_grad", 0)
    est = LossRegressor(RIDGE, sample_weight="w", tol_grad=1e-14).fit(X, y)
    assert est.score(X, y) > 0.99
    # a first fit with warm_start has no last minimum to start from
    with pytest.warns(ConvergenceWarning, match="the fit took no step: the initial"):
        LossRegressor(RIDGE, sample_weight="w", warm_start=True).fit(X, y)


def test_warm_start_continues_from_the_last_fit(breast_cancer):
    X, y = breast_cancer
    Xs = StandardScaler().fit_transform(X)
    est = logreg(C=1.0, warm_start=True, tol_grad=1e-8).fit(Xs, y)
    first = est.result_
    est.set_params(C=1.01).fit(Xs, y)
    cold = logreg(C=1.01, tol_grad=1e-8).fit(Xs, y)
    assert cold.history_[0] == pytest.approx(first.history[0] * 1.01, rel=1e-12)  # w, b = 0
    assert est.history_[0] < cold.history_[0] / 10         # started near the optimum
    assert est.n_iter_ < cold.n_iter_
    np.testing.assert_allclose(est.params_["w"], cold.params_["w"], atol=1e-6)


def test_a_failed_fit_leaves_the_last_fit_as_it_was():
    """A refit that fails after it read the new labels (a sample_weight of the wrong
    length), or after it compiled for new dims (warm start from other shapes), or a
    first partial_fit that fails, changes nothing: the last fit keeps predicting its
    own labels."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    k = np.digitize(X[:, 0], [-0.5, 0.5])
    clf = LossClassifier(SOFTMAX, proba="prob", classes_dim="K", sample_weight="w",
                         random_state=0, epochs=20)
    clf.fit(X, np.array(["cat", "dog", "eel"])[k])
    before = clf.predict(X), clf.predict_proba(X)
    with pytest.raises(ValueError, match="sample_weight"):
        clf.fit(X, np.array(["x", "y", "z"])[k], sample_weight=np.ones(59))
    clf.set_params(warm_start=True)
    with pytest.raises(ValueError, match="warm_start"):
        clf.fit(X, np.array(["x", "y"])[np.minimum(k, 1)])
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(clf.predict(X), before[0])
    np.testing.assert_array_equal(clf.predict_proba(X), before[1])
    fresh = LossClassifier(SOFTMAX, proba="prob", classes_dim="K", sample_weight="w",
                           optimizer="sgd", lr=0.1, random_state=0)
    with pytest.raises(ValueError, match="sample_weight"):
        fresh.partial_fit(X, k, classes=[0, 1, 2], sample_weight=np.ones(59))
    assert not hasattr(fresh, "params_") and not hasattr(fresh, "classes_")


def test_an_integer_random_state_is_lossc_trains_seed():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=64)
    est = LossRegressor(RIDGE, sample_weight="w", optimizer="adam", lr=0.01, epochs=3,
                        batch_size=16, random_state=7).fit(X, y)
    m = lossc.compile(RIDGE, dims={"D": 3})
    result = lossc.train(m, {"x": X, "y": y, "w": np.ones(64)}, lossc.Adam(lr=0.01),
                         epochs=3, batch_size=16, seed=7)
    for k in result.params:
        np.testing.assert_array_equal(est.params_[k], result.params[k])
    a = clone(est).set_params(random_state=np.random.RandomState(3)).fit(X, y)
    b = clone(est).set_params(random_state=np.random.RandomState(3)).fit(X, y)
    np.testing.assert_array_equal(a.params_["v"], b.params_["v"])


def test_dataframes_in_a_pipeline_with_pandas_output(breast_cancer):
    pd = pytest.importorskip("pandas")
    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    pipe = make_pipeline(StandardScaler().set_output(transform="pandas"), logreg(C=0.5))
    pipe.fit(X, y)
    est = pipe[-1]
    assert list(est.feature_names_in_) == list(X.columns)
    assert est.n_features_in_ == 30
    proba = pipe.predict_proba(X)
    assert proba.shape == (len(X), 2)
    renamed = StandardScaler().set_output(transform="pandas").fit_transform(X)
    renamed.columns = [f"f{k}" for k in range(30)]
    with pytest.raises(ValueError, match="feature names"):
        est.predict(renamed)
    assert isinstance(pipe.predict(X), np.ndarray)
    assert pd.Series(pipe.predict(X), index=X.index).eq(y).mean() > 0.95


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_a_regressors_default_stop_does_not_grow_with_the_targets_offset(reduce):
    """The classifier's default test, relative to the initial objective, stopped a
    ridge fit of y = 300 + X w after 3 iterations at R^2 = 0.62 (the initial objective
    grows with the square of the offset); the regressor's is scikit-learn's
    regressors' test on the gradient per sample."""
    from sklearn.linear_model import Ridge
    rng = np.random.RandomState(0)
    X = rng.randn(100, 3)
    for offset in (0.0, 300.0, 1e4):
        y = offset + X @ [1.0, 2, 3] + 0.1 * rng.randn(100)
        source = RIDGE.replace("reduce sum", f"reduce {reduce}")
        est = LossRegressor(source, sample_weight="w",
                            alpha=1.0 if reduce == "sum" else 0.01).fit(X, y)
        ridge = Ridge(alpha=1.0 if reduce == "sum" else 1.0).fit(X, y)
        assert est.result_.stopped == "tol_grad"
        np.testing.assert_allclose(est.params_["v"], ridge.coef_, atol=1e-3)
        assert est.score(X, y) == pytest.approx(ridge.score(X, y), abs=1e-6)


@pytest.mark.parametrize("kw, words", [
    ({"classes_dim": 2}, "classes_dim must name a dim of the model (dims: D, K), got 2"),
    ({"classes_dim": "Q"}, "classes_dim must name a dim of the model (dims: D, K), got 'Q'"),
    ({}, "dim 'K' has no size: the data do not set it and the file gives none; give it in "
         "dims={'K': ...}, or classes_dim='K' if it is the number of classes"),
    ({"classes_dim": "K", "dims": {"K": 5}},
     "dims={'K': 5} contradicts the data: K is the number of classes, 2"),
])
def test_classes_dim_mistakes_are_named(kw, words):
    """A classes_dim that is not a dim's name was a TypeError from sorting the dims, a
    missing one a CompileError pointing at the command line's --dim, and a dims= that
    contradicts it was overridden without a word."""
    import re
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match=re.escape(words)):
        LossClassifier(SOFTMAX, proba="prob", sample_weight="w", **kw).fit(X, y)
    assert LossClassifier(SOFTMAX, proba="prob", sample_weight="w", classes_dim="K",
                          dims={"K": 2}).fit(X, y).dims_["K"] == 2


def test_a_fit_whose_line_search_takes_no_step_warns():
    """Features of 1e50 leave L-BFGS no step from the initial parameters: the fit
    returned them without a word (scikit-learn warns on L-BFGS-B's ABNORMAL stop)."""
    from sklearn.exceptions import ConvergenceWarning
    rng = np.random.RandomState(0)
    X = rng.randn(100, 3)
    y = X @ [1.0, 2, 3]
    with pytest.warns(ConvergenceWarning, match="the fit took no step"):
        est = LossRegressor(RIDGE, sample_weight="w").fit(X * 1e50, y)
    assert (est.result_.stopped, est.n_iter_) == ("line_search", 0)


def test_a_fitted_estimator_predicts_with_the_hypers_it_was_fitted_with():
    """set_params of a hyper after fit changed the predictions without a refit, and a
    new model with other hypers made predict raise."""
    source = LOGREG.replace("output p1 = sigmoid(z)", "hyper T = 1\noutput p1 = sigmoid(z / T)")
    rng = np.random.RandomState(0)
    X = rng.randn(100, 3)
    y = (X[:, 0] > 0).astype(int)
    clf = LossClassifier(source, predict="label", proba="p1", sample_weight="sw",
                         T=2.0).fit(X, y)
    before = clf.predict_proba(X[:5])
    assert clf.hypers_ == {"T": 2.0}
    clf.set_params(T=100.0)
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), before)
    clf.set_params(model=RIDGE.replace("alpha", "lam"), lam=2.0)
    np.testing.assert_array_equal(clf.predict_proba(X[:5]), before)
    clf.set_params(model=source, T=100.0).fit(X, y)
    assert clf.hypers_ == {"T": 100.0}
    assert not np.allclose(clf.predict_proba(X[:5]), before)
    # an estimator pickled before hypers_ was kept predicts with its parameters' values
    older = pickle.loads(pickle.dumps(clf))
    del older.hypers_
    np.testing.assert_array_equal(older.predict_proba(X[:5]), clf.predict_proba(X[:5]))


def test_a_regressor_predicts_a_vector_target():
    src = """
        dim D
        dim T
        input x[D]
        input y[T]
        param A[T, D]
        param c[T]
        loss = 0.5 * sum((A @ x + c - y) ^ 2)
        output yhat = A @ x + c
        """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    Y = X @ rng.normal(size=(3, 2)) + 1.0
    est = LossRegressor(textwrap.dedent(src), tol_grad=1e-12).fit(X, Y)
    assert est.dims_ == {"D": 3, "T": 2}
    assert est.predict(X).shape == (50, 2)
    assert est.score(X, Y) > 0.999999
    # one target as a 1-d y, as scikit-learn's multi-output regressors take it (it was
    # refused: y must be 2-d), predicted 1-d; and 2-d again after a refit on a 2-d y
    one = est.fit(X, Y[:, 0])
    assert one.dims_["T"] == 1 and one.predict(X).shape == (50,)
    assert one.score(X, Y[:, 0]) > 0.999999
    assert est.fit(X, Y[:, :1]).predict(X).shape == (50, 1)
