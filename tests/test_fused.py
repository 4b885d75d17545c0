"""Fused native training steps against the Python loop with lossc.optim's optimizers:
bit for bit in float64, within rounding in float32; divergence and index errors."""
import numpy as np
import pytest

import lossc
from conftest import SAMPLES
from lossc.optim.optimizers import SGD, Adam, AdamW, RMSprop
from lossc.runtime.fused import FusedError, FusedSteps
from lossc.runtime.calls import BoundArgs

OPTIMIZERS = [
    lambda: SGD(0.1), lambda: SGD(0.1, momentum=0.9, nesterov=True),
    lambda: SGD(0.1, momentum=0.9, dampening=0.2, weight_decay=0.01),
    lambda: RMSprop(0.01), lambda: RMSprop(0.01, momentum=0.5, centered=True, weight_decay=0.1),
    lambda: Adam(0.01), lambda: Adam(0.01, weight_decay=0.1, amsgrad=True),
    lambda: AdamW(0.01), lambda: AdamW(0.02, amsgrad=True),
]


def python_epoch(m, opt, theta, bound, order, bs):
    g = np.empty(m.n_params, dtype=m.dtype)
    for lo in range(0, bound.B, bs):
        idx = order[lo:lo + bs]
        batch = BoundArgs(m, [a[idx] for a in bound.arrays], len(idx), bound.hypers)
        m.value_and_grad_flat(theta, batch, grad_out=g)
        opt.step(theta, g)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", OPTIMIZERS, ids=lambda f: repr(f()))
def test_fused_epochs_match_the_python_loop(make, dtype):
    m = lossc.compile(SAMPLES / "softmax.loss", dtype=dtype)
    rng = np.random.default_rng(0)
    X, lab = rng.normal(size=(203, 4)), rng.integers(0, 3, size=203)
    bound = m.bind({"x": X, "label": lab})
    theta0 = m.pack_params(m.init_params(1))
    o1, o2 = make(), make()
    p1, p2 = theta0.copy(), theta0.copy()
    fused = FusedSteps(m, o2, bound, 16)
    for epoch in range(3):
        order = rng.permutation(203).astype(np.int64)
        python_epoch(m, o1, p1, bound, order, 16)
        fused.run(p2, order, 0, 7)           # in two calls: batches 0..6, 7..12
        fused.run(p2, order, 7, 6)
    fused.sync()
    assert o1.t == o2.t == 39
    assert sorted(o1.state) == sorted(o2.state)
    if dtype == "float64":
        np.testing.assert_array_equal(p1, p2)
        for k in o1.state:
            np.testing.assert_array_equal(o1.state[k], o2.state[k])
    else:
        np.testing.assert_allclose(p1, p2, rtol=1e-4, atol=1e-5)


def softmax_on_40_samples(rng):
    """The softmax sample model and 40 random samples bound to it."""
    m = lossc.compile(SAMPLES / "softmax.loss")
    X, lab = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    return m, m.bind({"x": X, "label": lab})


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9), (0.0, 0.8)])
def test_fused_adam_matches_after_the_bias_corrections_settle(betas):
    # 1 - beta^t rounds to 1 after some steps (beta 0.5: 54, 0.8: 168, 0.9: 356); the
    # fused steps stop calling pow then, and must still give the Python loop's bits
    rng = np.random.default_rng(3)
    m, bound = softmax_on_40_samples(rng)
    theta0 = m.pack_params(m.init_params(1))
    o1, o2 = Adam(0.01, betas=betas), Adam(0.01, betas=betas)
    p1, p2 = theta0.copy(), theta0.copy()
    fused = FusedSteps(m, o2, bound, 4)
    for epoch in range(40):            # 400 steps, 10 per native call
        order = rng.permutation(40).astype(np.int64)
        python_epoch(m, o1, p1, bound, order, 4)
        fused.run(p2, order, 0, 10)
    fused.sync()
    assert o1.t == o2.t == 400
    assert 1 - betas[0] ** 400 == 1.0
    np.testing.assert_array_equal(p1, p2)
    for k in o1.state:
        np.testing.assert_array_equal(o1.state[k], o2.state[k])


def test_batch_buffers_start_on_cache_lines():
    # (a buffer 16 bytes into a line, as np.empty gives half the time, made W5's
    # native steps some 20% slower: every row one line more, every vector load split)
    from lossc.runtime.calls import _addr
    m = lossc.compile(ROWS_MODEL.format(D=32))
    rng = np.random.default_rng(0)
    bound = m.bind({"x": rng.normal(size=(100, 32)), "y": rng.normal(size=100),
                    "k": rng.integers(0, 3, size=100)})
    for bs in (1, 3, 64):
        fused = FusedSteps(m, Adam(0.01), bound, bs)
        assert len(fused.batches) == 3
        for buf in fused.batches:
            assert _addr(buf) % 64 == 0 and buf.shape[0] == bs and buf.flags.c_contiguous


ROWS_MODEL = """
dim D = {D}
input x[D]
input y
input k: int
param w[D]
param c[3]
loss = (dot(w, x) + c[k] - y) ^ 2
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("D", [1, 3, 5, 7, 9, 12])
def test_fused_gather_copies_rows_of_every_size(D, dtype):
    """The gather copies a row 32 bytes at a time, then 16, 8 and 4 as the remainder's
    bits say: rows of 4 to 48 bytes (float32 and float64, and int64 labels) give the
    parameters of the Python loop on the same batches."""
    m = lossc.compile(ROWS_MODEL.format(D=D), dtype=dtype, cache=False)
    rng = np.random.default_rng(D)
    n = 77
    bound = m.bind({"x": rng.normal(size=(n, D)), "y": rng.normal(size=n),
                    "k": rng.integers(0, 3, size=n)})
    theta0 = m.pack_params(m.init_params(2))
    p1, p2 = theta0.copy(), theta0.copy()
    o1, o2 = SGD(0.05), SGD(0.05)
    fused = FusedSteps(m, o2, bound, 8)
    for epoch in range(2):
        order = rng.permutation(n).astype(np.int64)
        python_epoch(m, o1, p1, bound, order, 8)
        fused.run(p2, order, 0, 10)
    if dtype == "float64":
        np.testing.assert_array_equal(p1, p2)
    else:
        np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [lambda: Adam(0.05, clip_norm=0.1),
                                  lambda: SGD(0.05, momentum=0.5, clip_norm=0.1)],
                         ids=["adam", "sgd"])
def test_fused_clipping_matches_bit_for_bit(make, dtype):
    """The clipping norm is summed as the native steps sum it (optimizers.global_norm):
    a norm summed in another order scaled the gradient a rounding apart, from the
    first step on. (A layer of 70 units: a gradient of a few hundred numbers.)"""
    m = lossc.compile("dim H = 70\ndim D = 9\ninput x[D]\ninput y\n"
                      "param W[H, D] = normal(0, 0.3)\nparam v[H] = normal(0, 0.3)\n"
                      "loss = (dot(v, tanh(W @ x)) - y) ^ 2\n", dtype=dtype)
    rng = np.random.default_rng(1)
    bound = m.bind({"x": rng.normal(size=(100, 9)) * 5, "y": rng.normal(size=100)})
    theta0 = m.pack_params(m.init_params(2))
    o1, o2 = make(), make()
    p1, p2 = theta0.copy(), theta0.copy()
    order = np.arange(100, dtype=np.int64)
    python_epoch(m, o1, p1, bound, order, 10)
    FusedSteps(m, o2, bound, 10).run(p2, order, 0, 10)
    assert not np.array_equal(p1, theta0)
    np.testing.assert_array_equal(p1, p2)


def test_fused_stops_on_divergence_before_updating():
    m = lossc.compile(SAMPLES / "poisson.loss")      # exp(eta) overflows fast
    rng = np.random.default_rng(1)
    bound = m.bind({"x": rng.normal(size=(64, 3)), "count": rng.poisson(3.0, size=64) * 1.0})
    theta = m.pack_params(m.init_params(0))
    fused = FusedSteps(m, SGD(lr=10.0), bound, 8)
    with pytest.raises(FusedError) as e:
        fused.run(theta, np.arange(64, dtype=np.int64), 0, 8)
    assert e.value.kind == "diverged"
    k = e.value.batch
    assert 0 < k < 8 and not np.isfinite(fused.losses[k])
    assert np.all(np.isfinite(theta))


def test_fused_index_error_names_the_sample_in_the_data_set():
    m = lossc.compile(SAMPLES / "softmax.loss")
    X, lab = np.zeros((10, 4)), np.array([0, 1, 2, 0, 1, 2, 0, 7, 1, 2])
    bound = m.bind({"x": X, "label": lab})
    order = np.arange(10, dtype=np.int64)[::-1].copy()
    with pytest.raises(FusedError) as e:
        FusedSteps(m, Adam(0.1), bound, 4).run(m.pack_params(m.init_params()), order, 0, 3)
    assert e.value.kind == "index"
    assert "label = 7 is out of range 0..2 at sample 7" in str(e.value.index_error)


def test_train_leaves_the_optimizer_as_the_python_loop_would(monkeypatch):
    """lossc.train through the fused steps hands the optimizer's state back at the end
    (after every epoch when a callback might look at it): step count and moments equal
    those of the Python loop's optimizer, bit for bit."""
    import lossc.runtime.fused as fused_mod
    m = lossc.compile(SAMPLES / "logistic.loss")
    rng = np.random.default_rng(3)
    data = {"x": rng.normal(size=(150, 8)), "y": (rng.random(150) < 0.5) * 1.0}
    fused_opt = Adam(0.05)
    seen = []
    lossc.train(m, data=data, optimizer=fused_opt, batch_size=16, epochs=3, seed=2,
                callback=lambda info: seen.append((fused_opt.t,
                                                   fused_opt.state["exp_avg"].copy())))
    quiet_opt = Adam(0.05)
    lossc.train(m, data=data, optimizer=quiet_opt, batch_size=16, epochs=3, seed=2)
    monkeypatch.setattr(fused_mod, "supports", lambda optimizer: False)
    python_opt = Adam(0.05)
    python_seen = []
    lossc.train(m, data=data, optimizer=python_opt, batch_size=16, epochs=3, seed=2,
                callback=lambda info: python_seen.append((python_opt.t,
                                                          python_opt.state["exp_avg"].copy())))
    assert [t for t, _ in seen] == [t for t, _ in python_seen] == [10, 20, 30]
    for (_, a), (_, b) in zip(seen, python_seen):
        np.testing.assert_array_equal(a, b)
    for opt in (fused_opt, quiet_opt):
        assert opt.t == python_opt.t == 30
        assert sorted(opt.state) == sorted(python_opt.state)
        for k in python_opt.state:
            np.testing.assert_array_equal(opt.state[k], python_opt.state[k])


def test_a_schedule_reaches_the_fused_steps(monkeypatch):
    """The learning rate a schedule sets each epoch is the one the native update uses:
    parameters equal the Python loop's, bit for bit (and differ from a constant rate)."""
    import lossc.runtime.fused as fused_mod
    from lossc.optim import schedules
    m = lossc.compile(SAMPLES / "logistic.loss")
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=(90, 8)), "y": (rng.random(90) < 0.5) * 1.0}

    def run(schedule=None):
        return lossc.train(m, data=data, optimizer=Adam(0.05), batch_size=8, epochs=4,
                           seed=1, schedule=schedule, monitor="batches").last_params

    fused_p = run(schedules.step(1, 0.3))
    constant = run()
    monkeypatch.setattr(fused_mod, "supports", lambda optimizer: False)
    python_p = run(schedules.step(1, 0.3))
    for k in python_p:
        np.testing.assert_array_equal(fused_p[k], python_p[k])
    assert not np.array_equal(fused_p["w"], constant["w"])


def test_each_step_lists_a_later_batchs_rows_for_the_gradient_to_prefetch():
    """Before each batch's gradient, the steps list the row addresses of the batch
    AHEAD_BATCHES on, if the run has it, input by input, and name the list in the
    gradient's frame (ahead, ahead_rows; no rows when there is no such batch). The
    prefetches change no result (the epochs-match test above runs with them)."""
    from lossc.codegen.fused import AHEAD_BATCHES
    from lossc.runtime.calls import _addr
    m = lossc.compile(SAMPLES / "softmax.loss")
    rng = np.random.default_rng(3)
    n = 8 * (AHEAD_BATCHES + 3)
    X, lab = rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)
    bound = m.bind({"x": X, "label": lab})
    order = rng.permutation(n).astype(np.int64)
    f = FusedSteps(m, Adam(0.01), bound, 8)
    theta = m.pack_params(m.init_params(0))
    # batches 1 .. AHEAD_BATCHES + 2: the last list is made before batch 2's gradient,
    # for batch AHEAD_BATCHES + 2
    f.run(theta, order, 1, AHEAD_BATCHES + 2)
    last = AHEAD_BATCHES + 2
    rows = order[8 * last:8 * last + 8]
    x_rows = _addr(bound.arrays[0]) + rows * 4 * 8
    label_rows = _addr(bound.arrays[1]) + rows * 8
    np.testing.assert_array_equal(f.ahead[:16], np.concatenate([x_rows, label_rows]))
    assert f.frame.ahead == _addr(f.ahead)


def test_no_prefetch_list_for_batches_that_would_crowd_l2(monkeypatch):
    from lossc.runtime import fused
    rng = np.random.default_rng(3)
    m, bound = softmax_on_40_samples(rng)
    theta0 = m.pack_params(m.init_params(0))
    order = rng.permutation(40).astype(np.int64)
    with_list = FusedSteps(m, Adam(0.01), bound, 8)
    # a batch: 8 x (32 + 8) bytes
    monkeypatch.setattr(fused, "AHEAD_MAX_BYTES", fused.AHEAD_BATCHES * 8 * 40 - 1)
    without = FusedSteps(m, Adam(0.01), bound, 8)
    assert with_list.ahead is not None and without.ahead is None
    p1, p2 = theta0.copy(), theta0.copy()
    l1 = with_list.run(p1, order, 0, 5).copy()
    l2 = without.run(p2, order, 0, 5).copy()
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(p1, p2)
    assert without.frame.ahead == 0


def test_a_prefetch_list_changes_nothing_a_gradient_computes():
    """The gradient reads its frame's ahead and ahead_rows in every call: rows named
    there are prefetched, and the value and gradient stay bit for bit those of a call
    without."""
    from lossc.runtime.calls import _addr
    src = ("dim D = 32\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
           "z = dot(w, x) + b\nloss = softplus(z) - y * z\n")
    m = lossc.compile(src)
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(100, 32)), (rng.random(100) < 0.5) * 1.0
    other = rng.normal(size=(500, 32))
    theta = m.pack_params(m.init_params(2))
    g1, g2 = np.empty(m.n_params), np.empty(m.n_params)
    plain = m.prepare(theta, m.bind({"x": X, "y": y}), grad_out=g1)
    v1 = plain()
    listed = m.prepare(theta, m.bind({"x": X, "y": y}), grad_out=g2)
    rows = np.concatenate([_addr(other) + 256 * rng.permutation(500)[:64],
                           _addr(y) + 8 * np.arange(64)]).astype(np.int64)
    listed.frame.frame.ahead, listed.frame.frame.ahead_rows = _addr(rows), 64
    copy = other.copy()
    v2 = listed()
    assert v1 == v2
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(other, copy)
