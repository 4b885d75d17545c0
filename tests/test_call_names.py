"""LANGUAGE.md "Call-time names": the call methods take theta (and the flat vectors)
positionally, so an input or hyperparameter may have any name the language allows."""
import numpy as np
import pytest

import lossc

# inputs and hypers named like the call methods' own parameters and options
NAMES = ("dim N = 3\ninput theta[N]\ninput v\ninput data\ninput grad_out\ninput seed\n"
         "hyper hypers = 2\nhyper tangent = 0.5\nhyper init = 1\nhyper out = 0\n"
         "param w[N]\n"
         "loss = hypers * (dot(w, theta) - v) ^ 2 + tangent * data + init * grad_out "
         "+ seed * out\n")


@pytest.fixture(scope="module")
def model():
    return lossc.compile(NAMES, cache=False)


def _batch(B=5):
    rng = np.random.default_rng(0)
    return {"theta": rng.normal(size=(B, 3)), "v": rng.normal(size=B),
            "data": rng.normal(size=B), "grad_out": rng.normal(size=B),
            "seed": rng.normal(size=B)}


def _reference(w, d, hypers=2.0, tangent=0.5, init=1.0, out=0.0):
    r = d["theta"] @ w - d["v"]
    value = np.mean(hypers * r ** 2 + tangent * d["data"] + init * d["grad_out"]
                    + out * d["seed"])
    return value, 2 * hypers * (r[:, None] * d["theta"]).mean(axis=0)


def test_inputs_and_hypers_may_be_named_like_call_parameters(model):
    d = _batch()
    w = np.array([0.5, -1.0, 2.0])
    theta = {"w": w}
    want, want_grad = _reference(w, d, hypers=3.0, tangent=0.25, out=1.5)
    kw = dict(d, hypers=3.0, tangent=0.25, out=1.5)
    assert model.loss(theta, **kw) == pytest.approx(want, rel=1e-12)
    for _ in range(3):          # the checked call, then the repeated (fast) one
        value, grads = model.value_and_grad(theta, **kw)
        assert value == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(grads["w"], want_grad, rtol=1e-12)


def test_flat_calls_bind_and_prepare_take_their_vectors_positionally(model):
    d = _batch()
    w = np.array([0.5, -1.0, 2.0])
    want, want_grad = _reference(w, d)
    bound = model.bind(d)
    flat = model.pack_params({"w": w})
    g = np.empty(3)
    for _ in range(3):
        value, grad = model.value_and_grad_flat(flat, bound, grad_out=g)
        assert value == pytest.approx(want, rel=1e-12) and grad is g
        np.testing.assert_allclose(g, want_grad, rtol=1e-12)
    assert model.loss_flat(flat, d) == pytest.approx(want, rel=1e-12)
    assert model.prepare(flat, bound, grad_out=g)() == pytest.approx(want, rel=1e-12)
    np.testing.assert_array_equal(model.unpack_params(flat)["w"], w)
    with pytest.raises(TypeError):
        model.value_and_grad_flat(theta_flat=flat, data=bound)


def test_scipy_objective_gives_the_models_names_precedence(model):
    d = _batch()
    w = model.init_params(0)["w"]
    # `seed` and `hypers` name an input and a hyperparameter here: they are those
    fun, x0 = model.scipy_objective(**d, hypers=3.0, init=2.0)
    value, grad = fun(x0)
    want, want_grad = _reference(w, d, hypers=3.0, init=2.0)
    assert value == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


def test_scipy_objective_options_where_no_name_takes_them():
    m = lossc.compile("input x\nparam w = 1\nhyper lam = 0\nloss = (w - x) ^ 2 + lam * w\n",
                      cache=False)
    x = np.array([1.0, 2.0, 4.0])
    fun, x0 = m.scipy_objective(x=x, hypers={"lam": 3.0}, init={"w": 2.0})
    assert x0.tolist() == [2.0]
    assert fun(x0)[0] == pytest.approx(np.mean((2.0 - x) ** 2) + 6.0)
    with pytest.raises(ValueError, match="'lam' is given twice"):
        m.scipy_objective(x=x, lam=1.0, hypers={"lam": 3.0})
