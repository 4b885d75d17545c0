"""LANGUAGE.md "Call-time names": the call methods take theta (and the flat vectors)
positionally, so an input or hyperparameter may have any name the language allows."""
import numpy as np
import pytest

import lossc

# inputs and hypers named like the call methods' own parameters and options
NAMES = ("dim N = 3\ninput theta[N]\ninput v\ninput data\ninput grad_out\ninput seed\n"
         "hyper hypers = 2\nhyper tangent = 0.5\nhyper init = 1\nhyper out = 0\n"
         "hyper self = 0\nparam w[N]\n"
         "loss = hypers * (dot(w, theta) - v) ^ 2 + tangent * data + init * grad_out "
         "+ seed * out + self\n")


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
    want += 2.0
    kw = dict(d, hypers=3.0, tangent=0.25, out=1.5, self=2.0)
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


# ---------------------------------------------------------------- overlapping buffers

LOGISTIC = ("dim D = 3\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
            "z = dot(w, x) + b\nloss = softplus(z) - y * z\n")


def _logistic_batch(B=6):
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(B, 3)), "y": (rng.random(B) < 0.5).astype(float)}


def test_prepare_refuses_buffers_that_share_memory():
    m = lossc.compile(LOGISTIC, cache=False)
    d = _logistic_batch()
    bound = m.bind(d)
    t = np.array([0.1, -0.2, 0.3, 0.05])
    with pytest.raises(ValueError, match="theta_flat and grad_out share memory"):
        m.prepare(t, bound, grad_out=t)
    buf = np.zeros(8)
    with pytest.raises(ValueError, match="theta_flat and grad_out share memory"):
        m.prepare(buf[:4], bound, grad_out=buf[2:6])
    # the gradient written into the batch's own memory
    x_flat = d["x"].reshape(-1)
    with pytest.raises(ValueError, match="grad_out and input 'x' share memory"):
        m.prepare(t, bound, grad_out=x_flat[:4])
    with pytest.raises(ValueError, match="theta_flat and input 'x' share memory"):
        m.prepare(x_flat[4:8], bound, grad_out=np.zeros(4))
    # apart, side by side in one buffer: fine, and right
    call = m.prepare(buf[:4], bound, grad_out=buf[4:])
    buf[:4] = t
    want, want_grad = m.value_and_grad_flat(t, d)
    assert call() == want
    np.testing.assert_array_equal(buf[4:], want_grad)


def test_value_and_grad_flat_refuses_grad_out_sharing_memory():
    m = lossc.compile(LOGISTIC, cache=False)
    d = _logistic_batch()
    bound = m.bind(d)
    t = np.array([0.1, -0.2, 0.3, 0.05])
    g = np.empty(4)
    want = m.value_and_grad_flat(t.copy(), bound)
    for _ in range(3):      # checked, then the repeated (native) way
        value, grad = m.value_and_grad_flat(t, bound, grad_out=g)
        assert value == want[0] and np.array_equal(g, want[1])
        with pytest.raises(ValueError, match="theta_flat and grad_out share memory"):
            m.value_and_grad_flat(t, bound, grad_out=t)
        with pytest.raises(ValueError, match="grad_out and input 'x' share memory"):
            m.value_and_grad_flat(t, bound, grad_out=d["x"].reshape(-1)[2:6])
        np.testing.assert_array_equal(t, [0.1, -0.2, 0.3, 0.05])
        np.testing.assert_array_equal(bound.arrays[0], d["x"])
    with pytest.raises(ValueError, match="grad_out and input 'y' share memory"):
        m.value_and_grad_flat(t, {"x": d["x"], "y": d["y"]}, grad_out=d["y"][:4])
