"""The L1 penalty: soft thresholding, OWL-QN against scikit-learn's ElasticNet on its
diabetes data, and the proximal step of SGD and Adam (also through the training
driver, which must then leave the native fused steps aside)."""
import numpy as np
import pytest

import lossc
from lossc.optim import SGD, Adam, AdamW, RMSprop, l1_weights, owlqn, prox_l1, train
from lossc.optim.orthant_wise import pseudo_gradient
from lossc.runtime import fused

sklearn_datasets = pytest.importorskip("sklearn.datasets")
sklearn_linear = pytest.importorskip("sklearn.linear_model")


# ------------------------------------------------------------ soft thresholding

def test_prox_l1_values():
    x = np.array([3.0, -3.0, 0.5, -0.5, 1.0, 0.0])
    np.testing.assert_array_equal(prox_l1(x, 1.0), [2.0, -2.0, 0.0, 0.0, 0.0, 0.0])
    assert not np.signbit(prox_l1(x, 1.0)[3])             # a plain zero, not -0.0
    t = np.array([0.0, 4.0, 0.25, 0.0, 0.5, 1.0])         # per-coordinate thresholds
    np.testing.assert_array_equal(prox_l1(x, t), [3.0, 0.0, 0.25, -0.5, 0.5, 0.0])
    np.testing.assert_array_equal(prox_l1(x, 0.0), x)
    assert x[0] == 3.0                                    # x is not changed ...
    out = prox_l1(x, 1.0, out=x)                          # ... unless it is `out`
    assert out is x and x[0] == 2.0
    x32 = np.array([1.5, -0.2], dtype=np.float32)
    assert prox_l1(x32, 0.5).dtype == np.float32


@pytest.mark.parametrize("threshold,match", [
    (-1.0, ">= 0"), (np.nan, ">= 0"), (np.ones(3), "shape"), (np.array([1.0, -1.0]), ">= 0")])
def test_prox_l1_bad_threshold(threshold, match):
    with pytest.raises(ValueError, match=match):
        prox_l1(np.zeros(2), threshold)


def test_l1_weights_leave_unnamed_parameters_unpenalized():
    layout = {"W": (2, 2), "w": (3,), "b": ()}
    got = l1_weights(layout, {"W": 0.1, "w": [1.0, 0.0, 2.0]})
    np.testing.assert_array_equal(got, [0.1] * 4 + [1.0, 0.0, 2.0] + [0.0])
    with pytest.raises(ValueError, match="unknown parameter 'v'"):
        l1_weights(layout, {"v": 1.0})
    with pytest.raises(ValueError, match="shape"):
        l1_weights(layout, {"w": [1.0, 2.0]})
    with pytest.raises(ValueError, match=">= 0"):
        l1_weights(layout, {"b": -1.0})


def test_l1_weights_from_a_compiled_model():
    m = lossc.compile("input x[3]\ninput y\nparam w[3]\nparam b\n"
                      "loss = (dot(w, x) + b - y) ^ 2\n")
    np.testing.assert_array_equal(l1_weights(m, {"w": 0.5}), [0.5, 0.5, 0.5, 0.0])


def test_pseudo_gradient():
    x = np.array([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    g = np.array([0.5, 0.5, 2.0, -2.0, 0.5, -0.5])
    # away from 0: g + l1 sign(x); at 0: the one-sided derivative that descends, or 0
    np.testing.assert_array_equal(pseudo_gradient(x, g, 1.0),
                                  [1.5, -0.5, 1.0, -1.0, 0.0, 0.0])
    l1 = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])     # 0: an unpenalized coordinate
    np.testing.assert_array_equal(pseudo_gradient(x, g, l1),
                                  [1.5, -0.5, 1.0, -2.0, 0.5, 0.0])


# ------------------------------------------------------------ OWL-QN: elastic net

@pytest.fixture(scope="module")
def diabetes():
    return sklearn_datasets.load_diabetes(return_X_y=True)


def elastic_net(X, y, alpha, l1_ratio):
    """sklearn's ElasticNet objective with an unpenalized intercept, as (smooth part
    fun, L1 weights) on x = (w, b):
    1/(2n) ||y - Xw - b||^2 + alpha (1 - l1_ratio) / 2 ||w||^2 + alpha l1_ratio ||w||_1."""
    n, d = X.shape
    ridge = alpha * (1 - l1_ratio)

    def fun(x):
        w, b = x[:d], x[d]
        r = X @ w + b - y
        return r @ r / (2 * n) + 0.5 * ridge * w @ w, np.append(X.T @ r / n + ridge * w,
                                                                r.sum() / n)
    return fun, l1_weights({"w": (d,), "b": ()}, {"w": alpha * l1_ratio})


@pytest.mark.parametrize("alpha,l1_ratio", [(0.01, 0.5), (0.1, 0.7), (0.05, 1.0), (1.0, 0.9)])
def test_owlqn_matches_sklearn_elastic_net(diabetes, alpha, l1_ratio):
    X, y = diabetes
    d = X.shape[1]
    sk = sklearn_linear.ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-14,
                                   max_iter=1_000_000).fit(X, y)
    fun, l1 = elastic_net(X, y, alpha, l1_ratio)
    res = owlqn(fun, np.zeros(d + 1), l1, tol_grad=1e-10, tol_loss=None)
    assert res.converged, res.message
    w, b = res.x[:d], res.x[d]
    np.testing.assert_allclose(w, sk.coef_, rtol=0, atol=1e-6)
    assert abs(b - sk.intercept_) <= 1e-6
    assert (sk.coef_ == 0).any()                     # the case has zeros ...
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)      # ... exactly where sklearn's
    # the value reported is the whole objective, L1 term included
    assert res.value == pytest.approx(fun(res.x)[0] + l1 @ np.abs(res.x), rel=1e-15)
    assert res.evaluations <= 200


def test_owlqn_with_zero_l1_is_a_smooth_minimizer():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(20, 5))
    y = rng.normal(size=20)
    res = owlqn(lambda x: (0.5 * np.sum((A @ x - y) ** 2), A.T @ (A @ x - y)), np.zeros(5),
                0.0, tol_grad=1e-10, tol_loss=None)
    np.testing.assert_allclose(res.x, np.linalg.lstsq(A, y, rcond=None)[0], atol=1e-9)


def test_owlqn_large_l1_gives_all_zeros(diabetes):
    X, y = diabetes
    fun, _ = elastic_net(X, y, 1.0, 1.0)
    x0 = np.full(X.shape[1] + 1, 3.0)
    res = owlqn(fun, x0, l1_weights({"w": (10,), "b": ()}, {"w": 1e4}), tol_grad=1e-9)
    assert res.converged and np.all(res.x[:10] == 0)
    assert res.x[10] == pytest.approx(y.mean(), abs=1e-9)     # b is not penalized


@pytest.mark.parametrize("l1,match", [
    (-1.0, "finite number >= 0"), (np.ones(3), r"\(11,\)"), ("a", "l1 must"),
    (None, "use lbfgs")])
def test_owlqn_bad_l1(diabetes, l1, match):
    fun, _ = elastic_net(*diabetes, 0.1, 0.5)
    with pytest.raises(ValueError, match=match):
        owlqn(fun, np.zeros(11), l1)


# ------------------------------------------------------------ SGD and Adam with l1=

@pytest.fixture(scope="module")
def sparse_regression():
    """200 samples of 8 features, 3 of which matter; the lasso at alpha = 0.1 (sklearn's
    objective), whose solution has zeros, by sklearn."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 8))
    y = X @ np.array([1.5, -2.0, 0.7, 0, 0, 0, 0, 0]) + 0.3 + 0.5 * rng.normal(size=200)
    sk = sklearn_linear.Lasso(alpha=0.1, tol=1e-14, max_iter=1_000_000).fit(X, y)
    assert (sk.coef_ == 0).sum() >= 3
    fun, l1 = elastic_net(X, y, 0.1, 1.0)
    return X, fun, l1, sk


def test_sgd_l1_is_proximal_gradient(sparse_regression):
    """Full-batch SGD with l1 and lr = 1/L is ISTA: it converges to the lasso solution,
    with sklearn's zeros exactly."""
    X, fun, l1, sk = sparse_regression
    A = np.hstack([X, np.ones((len(X), 1))])
    opt = SGD(lr=1 / np.linalg.eigvalsh(A.T @ A / len(X))[-1], l1=l1)
    x = np.zeros(9)
    for _ in range(300):
        opt.step(x, fun(x)[1])
    np.testing.assert_allclose(x[:8], sk.coef_, rtol=0, atol=1e-9)
    assert abs(x[8] - sk.intercept_) <= 1e-9
    np.testing.assert_array_equal(x[:8] == 0, sk.coef_ == 0)


def test_adam_l1_threshold_is_each_coordinates_step():
    """One Adam step with l1: the plain step s m, then each coordinate shrunk by its own
    step size s_i times l1_i."""
    p = np.array([0.5, -0.3, 0.02, 1.0])
    g = np.array([0.1, -0.4, 0.05, 2.0])
    l1 = np.array([0.1, 0.1, 0.1, 0.0])
    opt = Adam(lr=0.01, l1=l1)
    q = p.copy()
    opt.step(q, g)
    m, v = 0.1 * g, 0.001 * g * g
    s = (0.01 / 0.1) / (np.sqrt(v) / np.sqrt(0.001) + 1e-8)
    z = p - s * m
    want = np.sign(z) * np.maximum(np.abs(z) - s * l1, 0)
    np.testing.assert_allclose(q, want, rtol=1e-14)
    assert q[2] == 0.0
    # l1 = 0 is Adam's update (up to rounding: the step is formed in another order)
    a, b = p.copy(), p.copy()
    Adam(lr=0.01).step(a, g)
    Adam(lr=0.01, l1=0.0).step(b, g)
    np.testing.assert_allclose(a, b, rtol=1e-15)


def test_adam_l1_finds_the_lasso_zeros(sparse_regression):
    """Adam's proximal step has the lasso solution as its fixed point: with a rate that
    decays, it gets there, with sklearn's zeros exactly."""
    X, fun, l1, sk = sparse_regression
    opt = Adam(lr=0.1, l1=l1)
    x = np.zeros(9)
    for k in range(3000):
        opt.lr = 0.1 * 0.998 ** k
        opt.step(x, fun(x)[1])
    np.testing.assert_array_equal(x[:8] == 0, sk.coef_ == 0)
    np.testing.assert_allclose(x[:8], sk.coef_, rtol=0, atol=1e-3)


@pytest.mark.parametrize("make", [lambda: SGD(l1=-1), lambda: Adam(l1=np.nan),
                                  lambda: AdamW(l1=[[1.0]])])
def test_bad_l1_is_refused(make):
    with pytest.raises(ValueError, match="l1"):
        make()


def test_l1_vector_of_the_wrong_length_names_l1():
    with pytest.raises(ValueError, match="l1 has 3 weights, the parameters 2"):
        SGD(lr=0.1, l1=np.ones(3)).step(np.zeros(2), np.ones(2))


def test_dict_params_take_flat_l1_weights():
    params = {"w": np.array([1.0, -0.05]), "b": np.array(0.01)}
    SGD(lr=1.0, l1=[0.1, 0.1, 0.0]).step(params, {"w": np.zeros(2), "b": np.array(0.0)})
    np.testing.assert_allclose(params["w"], [0.9, 0.0])
    assert params["b"] == 0.01


def test_fused_steps_refuse_optimizers_with_l1():
    assert fused.supports(SGD()) and fused.supports(Adam()) and fused.supports(RMSprop())
    assert not fused.supports(SGD(l1=0.1)) and not fused.supports(Adam(l1=[0.1, 0.0]))
    assert not fused.supports(AdamW(l1=0.0))


@pytest.mark.parametrize("make", [lambda l1: SGD(lr=0.05, l1=l1),
                                  lambda l1: Adam(lr=0.05, l1=l1)], ids=["sgd", "adam"])
def test_training_with_l1_gives_exact_zeros(make):
    """Mini-batch training through the driver: with l1, the Python steps (the native
    fused ones have no proximal step) leave the irrelevant weights at exactly 0."""
    m = lossc.compile("dim D = 6\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
                      "loss = (dot(w, x) + b - y) ^ 2 / 2\n", cache=False)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 6))
    y = X @ np.array([2.0, -1.0, 0.0, 0.0, 0.0, 0.0]) + 0.5 + 0.01 * rng.normal(size=512)
    l1 = l1_weights(m, {"w": 0.05})
    res = train(m, {"x": X, "y": y}, optimizer=make(l1), batch_size=32, epochs=30,
                init={"w": np.full(6, 0.3), "b": np.array(0.0)})
    w = res.last_params["w"]
    assert np.all(w[2:] == 0) and abs(w[0] - 2) < 0.2 and abs(w[1] + 1) < 0.2
    assert res.last_params["b"] != 0
