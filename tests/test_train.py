"""The training driver, data loading, the SciPy objective and the metrics, on real
compiled models (samples/*.loss) and the bundled data."""
import json
import math

import numpy as np
import pytest

import lossc
from conftest import SAMPLES
from lossc.optim import (DataError, accuracy, load_data, load_params, per_sample_loss,
                         save_params, schedules, scipy_objective)
from lossc.optim.driver import train

DATA = SAMPLES / "data"
# logistic regression on 32 features: 256-byte rows, which a cache line's offset splits
LOGISTIC_32 = ("dim D = 32\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
               "z = dot(w, x) + b\nloss = softplus(z) - y * z\n")


@pytest.fixture(scope="module")
def logistic():
    return lossc.compile(SAMPLES / "logistic.loss")


@pytest.fixture(scope="module")
def softmax():
    return lossc.compile(SAMPLES / "softmax.loss")


@pytest.fixture(scope="module")
def rosenbrock():
    return lossc.compile(SAMPLES / "rosenbrock.loss")


@pytest.fixture(scope="module")
def data(logistic):
    return load_data(DATA / "logistic.csv", logistic)


@pytest.fixture(scope="module")
def lbfgs_optimum(logistic, data):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    fun, x0 = logistic.scipy_objective(x=data["x"], y=data["y"])
    res = scipy_optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    assert res.success
    return res


def small(n=10, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 8)), "y": (rng.random(n) < 0.5).astype(float)}

# ---------------------------------------------------------------- reaching optima


def test_adam_reaches_the_lbfgs_optimum(logistic, data, lbfgs_optimum):
    result = lossc.train(logistic, data=data, optimizer=lossc.Adam(lr=0.01), batch_size=64,
                         epochs=40, seed=0, schedule=schedules.cosine())
    assert result.best_loss - lbfgs_optimum.fun < 1e-4
    assert result.best_loss >= lbfgs_optimum.fun - 1e-12
    assert logistic.loss(result.params, **data) == result.best_loss
    # the issue's own run (constant rate, 20 epochs) gets there too
    result = lossc.train(logistic, data=data, optimizer=lossc.Adam(lr=0.01), batch_size=64,
                         epochs=20, seed=0)
    assert result.best_loss - lbfgs_optimum.fun < 1e-4
    # batch descent gets there to rounding
    full = lossc.train(logistic, data=data, optimizer=lossc.Adam(lr=0.05), batch_size=None,
                       epochs=3000, tol_grad=1e-9)
    assert full.stopped == "tol_grad"
    assert abs(full.best_loss - lbfgs_optimum.fun) < 1e-12


@pytest.mark.parametrize("opt", [lambda: lossc.SGD(lr=1e-3, momentum=0.9),
                                 lambda: lossc.Adam(lr=0.02)],
                         ids=["momentum", "adam"])
def test_rosenbrock_reaches_its_minimum(rosenbrock, opt):
    r = lossc.train(rosenbrock, optimizer=opt(), steps=20000)
    np.testing.assert_allclose(r.params["p"], np.ones(5), atol=1e-4)
    assert r.steps == r.epochs == 20000 and r.stopped == "steps"
    assert r.history[0] == 4.0 and len(r.history) == 20001
    assert r.best_loss == min(r.history) and r.samples == 0


def test_seed_example_trains_by_steps():
    m = lossc.compile(SAMPLES / "seed.loss")
    r = train(m, optimizer=lossc.SGD(lr=0.01), epochs=3)      # epochs are steps here
    assert r.steps == 3 and r.stopped == "steps"
    x1, x2 = 2.0, 5.0
    for _ in range(3):
        x1, x2 = x1 - 0.01 * (1 / x1 + x2), x2 - 0.01 * (x1 - math.cos(x2))
    assert float(r.last_params["x1"]) == pytest.approx(x1, rel=1e-12)
    assert float(r.last_params["x2"]) == pytest.approx(x2, rel=1e-12)

# ---------------------------------------------------------------- modes, seeds, batches


def test_same_seed_same_parameters_bit_for_bit(logistic, data):
    def run(seed, **kw):
        return lossc.train(logistic, data=data, optimizer=lossc.Adam(lr=0.02),
                           batch_size=50, epochs=3, seed=seed, **kw)
    a, b = run(7), run(7)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert a.history == b.history and a.step_losses == b.step_losses
    assert not np.array_equal(run(8).params["w"], a.params["w"])
    v1, v2 = run(3, validation=0.25), run(3, validation=0.25)
    assert v1.val_history == v2.val_history


def test_descent_modes_step_counts(logistic):
    d = small(10)
    for bs, per_epoch in ((None, 1), (0, 1), (100, 1), (4, 3), (1, 10), (5, 2)):
        r = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.1), batch_size=bs,
                        epochs=2)
        assert (r.steps, r.epochs, r.samples) == (2 * per_epoch, 2, 20), bs
        assert len(r.history) == 3 and len(r.step_losses) == r.steps


def sgd_by_hand(m, d, theta0, lr, bs, epochs, seed):
    """Mini-batch SGD written out: each epoch's order np.random.default_rng(seed)'s next
    permutation, the last batch the remainder. Returns (step losses, final flat theta)."""
    p = m.pack_params(theta0)
    rng = np.random.default_rng(seed)
    n = len(d["y"])
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, bs):
            idx = order[lo:lo + bs]
            v, g = m.value_and_grad_flat(p, {"x": d["x"][idx], "y": d["y"][idx]})
            losses.append(v)
            p = p - lr * g
    return losses, p


def test_minibatches_by_hand_with_the_partial_batch(logistic):
    d = small(10)
    theta0 = logistic.init_params(3)
    r = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.1), batch_size=4, epochs=2,
                    seed=5, init=theta0)
    # batches of 4, 4 and the remaining 2
    losses, p = sgd_by_hand(logistic, d, theta0, 0.1, 4, 2, 5)
    assert r.step_losses == losses
    np.testing.assert_array_equal(logistic.pack_params(r.last_params), p)
    assert r.history[-1] == logistic.loss(logistic.unpack_params(p), **d)


def test_epochs_are_shuffled_as_numpy_would(logistic):
    """With enough samples for the native shuffle (and the fused steps), each epoch's
    order is np.random.default_rng(seed).permutation(n), epoch after epoch."""
    rng = np.random.default_rng(8)
    n = 2600
    d = {"x": rng.normal(size=(n, 8)), "y": (rng.random(n) < 0.5) * 1.0}
    theta0 = logistic.init_params(3)
    r = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.1), batch_size=1000,
                    epochs=3, seed=9, init=theta0)
    losses, p = sgd_by_hand(logistic, d, theta0, 0.1, 1000, 3, 9)
    assert r.step_losses == losses
    np.testing.assert_array_equal(logistic.pack_params(r.last_params), p)


@pytest.mark.parametrize("with_progress", [False, True])
def test_monitor_batches_records_the_epochs_batch_objectives(with_progress):
    """monitor="batches": each epoch's loss is its batch objectives weighted by batch
    size (sizes 4, 4, 2 here), the run itself is unchanged, and no full pass (so no
    `loss` code) is needed."""
    m = lossc.compile(SAMPLES / "logistic.loss", cache=False)
    d = small(10)
    seen = []
    progress = (lambda step, epoch, value, rows: seen.append(rows)) if with_progress else None
    kw = dict(data=d, batch_size=4, epochs=3, seed=2, progress=progress)
    r = lossc.train(m, optimizer=lossc.Adam(lr=0.1), monitor="batches", **kw)
    assert "loss" not in m.code.objects
    sizes = np.array([4, 4, 2])
    losses = np.array(r.step_losses).reshape(3, 3)
    assert r.history[1:] == pytest.approx(list(losses @ sizes / 10), rel=1e-15)
    assert r.history[0] == m.value_and_grad(m.init_params(2), **d)[0]
    assert r.best_loss == min(r.history)
    full = lossc.train(m, optimizer=lossc.Adam(lr=0.1), **kw)
    np.testing.assert_array_equal(m.pack_params(full.last_params),
                                  m.pack_params(r.last_params))
    assert full.history[1:] != r.history[1:]
    if with_progress:
        assert seen == [4, 4, 2] * 3 * 2


def test_a_ctrl_c_in_the_progress_hook_counts_every_step_the_native_code_took():
    """The native steps run a chunk of steps, then the hook is called for each: a
    KeyboardInterrupt at step 70 left steps at 70 where 125 had been taken."""
    m = lossc.compile(SAMPLES / "logistic.loss", cache=False)
    X = np.random.default_rng(1).normal(size=(2000, 8))
    seen = []

    def progress(step, *_):
        seen.append(step)
        if step == 70:
            raise KeyboardInterrupt
    opt = lossc.Adam(0.01)
    r = lossc.train(m, {"x": X, "y": (X[:, 0] > 0) * 1.0}, opt, batch_size=16, epochs=5,
                    progress=progress)
    assert r.stopped == "interrupted" and seen[-1] == 70
    assert r.steps == opt.t == len(r.step_losses) > 70


def test_monitor_batches_sums_the_batches_of_a_sum_objective():
    src = (SAMPLES / "logistic.loss").read_text() + "\nreduce sum\n"
    m = lossc.compile(src, cache=False)
    r = lossc.train(m, data=small(10), optimizer=lossc.SGD(lr=0.01), batch_size=4, epochs=2,
                    seed=0, monitor="batches")
    assert r.history[1:] == pytest.approx(
        list(np.array(r.step_losses).reshape(2, 3).sum(axis=1)), rel=1e-15)
    with pytest.raises(ValueError, match="monitor"):
        lossc.train(m, data=small(10), monitor="epochs")
    # an epoch cut short by steps= (its one batch: 4 of 10 rows) is scaled to the whole
    # epoch's rows: its sum over fewer rows had been taken as the best epoch
    r = lossc.train(m, data=small(10), optimizer=lossc.SGD(lr=0.01), batch_size=4, steps=4,
                    seed=0, monitor="batches")
    assert r.history[-1] == pytest.approx(r.step_losses[-1] * 10 / 4, rel=1e-15)


def test_monitor_batches_with_a_split_stops_when_the_validation_objective_blows_up():
    """The last steps of an epoch blow the parameters up: its batches looked fine, and
    the run went on to its end with ok=True and an infinite validation objective."""
    m = lossc.compile(SAMPLES / "logistic.loss", cache=False)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(203, 8))
    data = {"x": X, "y": (X @ rng.normal(size=8) > 0).astype(float)}
    boom = lambda base, k: 1e300 if k == 2 else base       # noqa: E731
    r = lossc.train(m, data, lossc.SGD(0.1), batch_size=80, steps=7, schedule=boom,
                    monitor="batches", validation=0.2)
    assert (r.stopped, r.ok, r.best_epoch) == ("diverged", False, 2)
    assert "validation objective became inf after step 7 (end of epoch 3)" in r.stopped_reason
    assert np.isfinite(m.loss(r.params, **data))


def test_a_uint64_index_beyond_int64_is_named_not_wrapped():
    """It became a negative index in the conversion to int64 (label = -9223372036854775803)."""
    m = lossc.compile("input x[2]\ninput k: int\nparam w[2]\nloss = w[k] * x[k]\n", cache=False)
    k = np.array([0, 1, 2 ** 63 + 5, 1], dtype=np.uint64)
    with pytest.raises(DataError, match="sample 2, column 'k': 9.22337e[+]18 is too large"):
        lossc.train(m, {"x": np.ones((4, 2)), "k": k}, lossc.SGD(0.1), epochs=1)
    assert lossc.train(m, {"x": np.ones((4, 2)), "k": k % 2}, lossc.SGD(0.1), epochs=1).ok


def test_a_validation_objective_that_becomes_infinite_under_monitor_full_is_no_divergence():
    """Under monitor="full" the training objective at the epoch's parameters is finite:
    a held-out sample whose loss grows without bound (x = 60 labelled 0) is the data's,
    and the run stops by its own rules, not as diverged. (log(q) with q = 1 - p + 0 * x
    is the naive form no stabilizing rewrite matches: log(1 - p) would be -softplus.)"""
    m = lossc.compile("input x\ninput y\nparam w\nparam b\np = 1 / (1 + exp(-(w * x + b)))\n"
                      "q = 1 - p + 0 * x\n"
                      "loss = -y * log(p) - (1 - y) * log(q)\n", cache=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = (x + 0.3 * rng.normal(size=400) > 0).astype(float)
    xv = np.r_[rng.normal(size=50), 60.0]
    yv = np.r_[(xv[:50] > 0).astype(float), 0.0]
    r = lossc.train(m, data={"x": x, "y": y}, val_data={"x": xv, "y": yv},
                    optimizer=lossc.LBFGS(), epochs=40, patience=5)
    assert r.stopped != "diverged" and not np.isfinite(r.val_history).all()


def test_monitor_batches_never_returns_parameters_with_an_infinite_objective():
    """The last step of epoch 1 blows w up, yet the epoch's batches looked fine: the
    end-of-run check finds the objective at those parameters infinite and falls back
    (here to the initial parameters, the only others seen)."""
    m = lossc.compile("input x\ninput y\ninput z\nparam a\nparam w\n"
                      "loss = (a - y)^2 + (w * x - z)^2\n", cache=False)
    data = {"x": np.array([0.0, 0.0, 1e160]), "y": np.ones(3),
            "z": np.array([0.0, 0.0, 1e-9])}
    for monitor in ("full", "batches"):
        r = lossc.train(m, data=data, optimizer=lossc.SGD(lr=0.5), batch_size=1, epochs=3,
                        shuffle=False, monitor=monitor)
        assert r.stopped == "diverged"
        assert math.isfinite(m.loss(r.params, **data))
        assert (r.best_epoch, r.best_loss) == (0, 1.0)


def test_no_shuffle_and_batch_descent_by_hand(logistic):
    d = small(6)
    theta0 = logistic.init_params(0)
    r = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.5), batch_size=None,
                    epochs=3, init=theta0)
    p = logistic.pack_params(theta0)
    for _ in range(3):
        p = p - 0.5 * logistic.value_and_grad_flat(p, d)[1]
    np.testing.assert_array_equal(logistic.pack_params(r.last_params), p)
    r2 = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.5), batch_size=6, epochs=3,
                     init=theta0, shuffle=False)
    np.testing.assert_array_equal(r2.last_params["w"], r.last_params["w"])


def test_steps_limit_cuts_the_last_epoch(logistic):
    d = small(10)
    r = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.1), batch_size=4, steps=5)
    assert (r.steps, r.epochs, r.stopped) == (5, 2, "steps")
    r = lossc.train(logistic, data=d, optimizer=lossc.SGD(lr=0.1), batch_size=4, steps=50,
                    epochs=2)
    assert (r.steps, r.epochs, r.stopped) == (6, 2, "epochs")


def test_schedule_sets_each_epochs_rate_and_restores_the_base(logistic):
    opt = lossc.SGD(lr=0.1)
    r = lossc.train(logistic, data=small(), optimizer=opt, epochs=4,
                    schedule=schedules.step(2, 0.5))
    assert r.lr == [0.1, 0.1, 0.05, 0.05] and opt.lr == 0.1
    r = lossc.train(logistic, data=small(), optimizer=opt, epochs=4, schedule=schedules.cosine())
    assert r.lr[0] == 0.1 and r.lr[2] == pytest.approx(0.05) and r.lr[3] < 0.02


def test_float32_model_trains(data):
    m32 = lossc.compile(SAMPLES / "logistic.loss", dtype="float32")
    r = lossc.train(m32, data=data, optimizer=lossc.Adam(lr=0.01), epochs=5)
    assert r.params["w"].dtype == np.float32
    assert r.best_loss < 0.37

# ---------------------------------------------------------------- stopping


def test_divergence_stops_names_the_step_and_keeps_the_best(logistic, data):
    r = lossc.train(logistic, data=data, optimizer=lossc.SGD(lr=1e7), epochs=3)
    assert r.stopped == "diverged" and not r.ok
    assert "at step" in r.stopped_reason and "smaller learning rate" in r.stopped_reason
    step = int(r.stopped_reason.split("at step ")[1].split()[0])
    assert step == r.steps + 1
    assert np.isfinite(r.best_loss)
    assert all(np.all(np.isfinite(v)) for v in r.params.values())
    assert logistic.loss(r.params, **data) == r.best_loss


def test_divergence_without_data(rosenbrock):
    r = lossc.train(rosenbrock, optimizer=lossc.SGD(lr=1.0), steps=100)
    assert r.stopped == "diverged" and "smaller learning rate" in r.stopped_reason
    assert r.steps < 100 and r.best_loss <= 4.0
    assert np.all(np.isfinite(r.params["p"]))


def test_early_stopping_on_validation(logistic, data):
    r = lossc.train(logistic, data=data, optimizer=lossc.Adam(lr=0.05), epochs=200,
                    validation=0.2, patience=2, seed=0)
    assert r.stopped == "early_stop" and r.epochs < 200
    assert len(r.val_history) == len(r.history) == r.epochs + 1
    assert r.best_loss == min(r.val_history)
    assert r.epochs - r.best_epoch == 2
    # the best parameters are those of the best validation loss, on the held-out rows
    perm = np.random.default_rng([0, 1]).permutation(4000)
    val = {k: v[np.sort(perm[:800])] for k, v in data.items()}
    assert logistic.loss(r.params, **val) == r.best_loss


def test_tolerances(logistic, data):
    r = lossc.train(logistic, data=data, optimizer=lossc.SGD(lr=0.5), batch_size=None,
                    epochs=5000, tol_grad=1e-3)
    assert r.stopped == "tol_grad" and r.epochs < 5000
    _, g = logistic.value_and_grad(r.last_params, **data)
    assert math.sqrt(sum(np.sum(v ** 2) for v in g.values())) <= 1e-3
    r = lossc.train(logistic, data=data, optimizer=lossc.SGD(lr=0.5), batch_size=None,
                    epochs=5000, tol_loss=1e-7)
    assert r.stopped == "tol_loss" and abs(r.history[-1] - r.history[-2]) <= 1e-7


@pytest.mark.parametrize("answer, stops", [(np.bool_(True), True), (np.bool_(False), False),
                                            (1, False), ("yes", False), (None, False)])
def test_a_callback_stops_the_run_by_true_of_python_or_numpy(logistic, answer, stops):
    """A comparison of NumPy numbers (info.loss is one after np.abs) gives numpy.bool_:
    True of it stops as Python's does; other values, truthy or not, do not."""
    r = lossc.train(logistic, data=small(), optimizer=lossc.SGD(lr=0.1), batch_size=5,
                    epochs=3, callback=lambda info: answer)
    assert (r.stopped, r.epochs) == (("callback", 1) if stops else ("epochs", 3))
    res = lossc.optim.lbfgs(lambda x: (float(x @ x), 2 * x), np.ones(3),
                            callback=lambda i: answer)
    assert (res.stopped == "callback") == stops


def test_callback_sees_each_epoch_and_can_stop(logistic):
    seen = []

    def cb(info):
        seen.append((info.epoch, info.loss, info.lr, info.steps))
        assert info.theta.shape == (logistic.n_params,)
        return info.epoch == 3

    r = lossc.train(logistic, data=small(), optimizer=lossc.SGD(lr=0.1), batch_size=5,
                    epochs=10, callback=cb)
    assert r.stopped == "callback" and r.epochs == 3
    assert [s[0] for s in seen] == [1, 2, 3] and [s[1] for s in seen] == r.history[1:]
    steps = []
    lossc.train(logistic, data=small(), optimizer=lossc.SGD(lr=0.1), batch_size=5, epochs=2,
                progress=lambda step, epoch, loss, n: steps.append((step, epoch, n)))
    assert steps == [(1, 0, 5), (2, 0, 5), (3, 1, 5), (4, 1, 5)]


def test_keyboard_interrupt_stops_cleanly_with_the_best(logistic, data):
    def interrupt(step, epoch, loss, n):
        if step == 150:
            raise KeyboardInterrupt

    r = lossc.train(logistic, data=data, optimizer=lossc.Adam(lr=0.01), epochs=10,
                    progress=interrupt)
    # (every step the native code took counts, those after the hook stopped it too)
    assert r.stopped == "interrupted" and not r.ok and r.steps >= 150
    assert r.steps == len(r.step_losses)
    assert r.epochs == 2 and r.best_epoch == 2
    assert logistic.loss(r.params, **data) == r.best_loss == min(r.history)


def test_init_and_data_from_a_file(logistic, data, tmp_path):
    start = {"w": np.full(8, 0.5), "b": np.array(0.1)}
    r = lossc.train(logistic, data=DATA / "logistic.csv", optimizer=lossc.SGD(lr=0.1),
                    epochs=1, init=start)
    assert r.history[0] == logistic.loss(start, **data)
    assert start["w"][0] == 0.5                   # the caller's arrays are not touched
    r2 = lossc.train(logistic, data=data, optimizer=lossc.SGD(lr=0.1), epochs=1,
                     init=logistic.pack_params(start))
    np.testing.assert_array_equal(r.params["w"], r2.params["w"])


def test_argument_errors(logistic, rosenbrock):
    with pytest.raises(ValueError, match="pass data="):
        lossc.train(logistic)
    with pytest.raises(ValueError, match="no inputs"):
        lossc.train(rosenbrock, data={"x": np.zeros(3)})
    with pytest.raises(ValueError, match="batch_size"):
        lossc.train(logistic, data=small(), batch_size=-1)
    with pytest.raises(ValueError, match="epochs"):
        lossc.train(logistic, data=small(), epochs=0)
    with pytest.raises(ValueError, match="validation"):
        lossc.train(logistic, data=small(), validation=1.5)
    with pytest.raises(DataError, match="both need"):
        lossc.train(logistic, data=small(3), validation=0.1)
    with pytest.raises(TypeError, match="optimizer"):
        lossc.train(logistic, data=small(), optimizer="adam")
    with pytest.raises(DataError, match="'y'"):
        lossc.train(logistic, data={"x": np.zeros((3, 8))})
    bad = small()
    bad["x"][4, 2] = np.nan
    with pytest.raises(DataError, match=r"sample 4, column 'x.2'"):
        lossc.train(logistic, data=bad)
    with pytest.raises(ValueError, match="init"):
        lossc.train(logistic, data=small(), init=np.zeros(3))


def test_non_finite_data_is_reported_by_its_sample_on_every_path(monkeypatch):
    """The NaN check runs after the copy to aligned rows when there is one (on the
    copy, same rows), before the validation split when there is one (the rows as
    passed), and after the conversion to the model's dtype (a float64 value beyond
    float32's range is infinite to a float32 model)."""
    from lossc.optim import prepare
    from lossc.runtime import scratch
    monkeypatch.setattr(prepare, "ALIGN_MIN_EPOCHS", 2)
    m = lossc.compile(LOGISTIC_32)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 32)), (rng.random(300) < 0.5) * 1.0
    x[211, 7] = np.nan
    copies = []
    real = prepare.line_aligned
    monkeypatch.setattr(prepare, "line_aligned",
                        lambda d, taken: copies.append(1) or real(d, taken))
    scratch.clear()
    with pytest.raises(DataError, match=r"sample 211, column 'x.7' is NaN"):
        lossc.train(m, data={"x": at_offset(x, 16), "y": y}, epochs=3)
    assert copies == [1] and scratch.kept_bytes() >= x.nbytes     # copied, given back
    with pytest.raises(DataError, match=r"sample 211, column 'x.7' is NaN"):
        lossc.train(m, data={"x": x, "y": y}, epochs=3, validation=0.3)
    x[211, 7] = 0.0
    y[5] = np.inf
    with pytest.raises(DataError, match=r"sample 5, column 'y' is inf"):
        lossc.train(m, data={"x": x, "y": y}, epochs=1)
    y[5] = 1e300           # finite in float64, beyond float32
    m32 = lossc.compile(LOGISTIC_32, dtype="float32")
    lossc.train(m, data={"x": x, "y": y}, epochs=1)             # float64: a number
    # (reported as a file's is: the value, not the inf the conversion would make)
    beyond = r"sample 5, column 'y' is 1e\+300, beyond float32's range"
    with pytest.raises(DataError, match=beyond):
        lossc.train(m32, data={"x": x, "y": y}, epochs=1)
    with pytest.raises(DataError, match=beyond):
        lossc.train(m32, data={"x": x, "y": y}, epochs=1, validation=0.2)
    with pytest.raises(DataError, match="val_data: " + beyond):
        lossc.train(m32, data={"x": x[:9], "y": np.zeros(9)}, epochs=1,
                    val_data={"x": x, "y": y})
    scratch.clear()


def test_data_check_finds_every_non_finite_value_and_accepts_huge_finite_ones():
    from lossc.optim.data import _check_finite
    # the fast check (one dot product) overflows on huge finite values: still accepted
    huge = np.full((5, 3), 1e300)
    _check_finite(huge, None, ["a", "b", "c"], "data", lambda r: f"sample {r}")
    for bad_value, what in ((np.inf, "is inf"), (-np.inf, "is -inf"), (np.nan, "is NaN")):
        for block in (np.zeros((5, 3)), huge.copy(), np.zeros((5, 3), dtype=np.float32)):
            block[3, 1] = bad_value
            with pytest.raises(DataError, match=rf"sample 3, column 'b' {what}"):
                _check_finite(block, None, ["a", "b", "c"], "data", lambda r: f"sample {r}")
    # a non-contiguous block (a column slice) is checked as well
    wide = np.zeros((5, 6))
    wide[2, 4] = np.nan
    with pytest.raises(DataError, match=r"sample 2, column 'c'"):
        _check_finite(wide[:, 2:5], None, ["a", "b", "c"], "data", lambda r: f"sample {r}")


def test_data_check_leaves_blas_alone(monkeypatch):
    # np.dot hands the check's sum to BLAS, whose threads, woken for it, compete with
    # lossc's workers (milliseconds a fit on a busy machine): the check sums itself
    from lossc.optim.data import _check_finite

    def no_blas(*args, **kwargs):
        raise AssertionError("the finiteness check called np.dot")
    monkeypatch.setattr(np, "dot", no_blas)
    block = np.arange(15.0).reshape(5, 3)
    _check_finite(block, None, ["a", "b", "c"], "data", lambda r: f"sample {r}")
    block[4, 0] = np.nan
    with pytest.raises(DataError, match=r"sample 4, column 'a' is NaN"):
        _check_finite(block, None, ["a", "b", "c"], "data", lambda r: f"sample {r}")


def test_initial_nan_is_reported_as_such(logistic):
    r = lossc.train(logistic, data=small(), init={"w": np.full(8, np.inf), "b": 0.0})
    assert r.stopped == "diverged" and "initial parameters" in r.stopped_reason
    assert r.steps == 0

# ---------------------------------------------------------------- data files


def write(path, text):
    path.write_text(text)
    return path


def test_csv_headers_in_any_order_and_spelling(tmp_path, logistic):
    rng = np.random.default_rng(0)
    X, Y = np.round(rng.normal(size=(5, 8)), 6), np.array([0, 1, 1, 0, 1])
    for names in ([f"x[{j}]" for j in range(8)], [f"x.{j}" for j in range(8)]):
        lines = ["y," + ",".join(reversed(names))]
        lines += [f"{Y[i]}," + ",".join(repr(float(v)) for v in X[i][::-1])
                  for i in range(5)]
        d = load_data(write(tmp_path / "a.csv", "\n".join(lines) + "\n"), logistic)
        np.testing.assert_array_equal(d["x"], X)
        np.testing.assert_array_equal(d["y"], Y)
    # no header: declaration order; blank lines and spaces are fine
    text = "\n\n".join(", ".join(repr(float(v)) for v in list(X[i]) + [Y[i]]) for i in range(5))
    d = load_data(write(tmp_path / "b.csv", text), logistic)
    np.testing.assert_array_equal(d["x"], X)


def test_matrix_inputs_by_header(tmp_path):
    m = lossc.compile("dim N = 2\ninput M[N, 3]\ninput y\nparam w[3]\n"
                      "loss = sum((M @ w - y) ^ 2)\n")
    header = 'y,M.0.0,"M[0,1]",M[0][2],M.1.0,M.1.1,M.1.2'
    d = load_data(write(tmp_path / "m.csv", header + "\n9,1,2,3,4,5,6\n"), m)
    np.testing.assert_array_equal(d["M"], [[[1, 2, 3], [4, 5, 6]]])


def test_npz_and_npy(tmp_path, logistic):
    X, Y = np.ones((4, 8)), np.array([0.0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    d = load_data(tmp_path / "d.npz", logistic)
    np.testing.assert_array_equal(d["x"], X)
    np.savez(tmp_path / "e.npz", x=X)
    with pytest.raises(DataError, match="no data for input 'y'"):
        load_data(tmp_path / "e.npz", logistic)
    np.savez(tmp_path / "f.npz", x=X, y=Y[:3])
    with pytest.raises(DataError, match="'x' has 4, 'y' has 3"):
        load_data(tmp_path / "f.npz", logistic)
    np.save(tmp_path / "g.npy", X)
    with pytest.raises(DataError, match=r"\.npy file holds one array"):
        load_data(tmp_path / "g.npy", logistic)
    one = lossc.compile("dim D = 3\ninput x[D]\nparam w[D]\nloss = sum((x - w) ^ 2)\n")
    np.save(tmp_path / "h.npy", np.ones((5, 3)))
    assert load_data(tmp_path / "h.npy", one)["x"].shape == (5, 3)


HEADER = "x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7,y\n"


@pytest.mark.parametrize("text, words", [
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7\n1,2,3,4,5,6,7,8\n", ["no column 'y' for input 'y'"]),
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,y\n1,2,3,4,5,6,7,8\n", ["no column 'x.7' for input 'x'"]),
    (HEADER.replace("\n", ",z\n") + "1,2,3,4,5,6,7,8,1,0\n", ["'z'", "matches no input"]),
    (HEADER.replace("x.1", "x.0") + "1,2,3,4,5,6,7,8,1\n", ["'x.0' appears twice"]),
    (HEADER + "1,2,3,4,5,6,7,8,1\n1,2,3,nan,5,6,7,8,1\n", ["row 3", "'x.3'", "NaN"]),
    (HEADER + "1,2,3,4,5,6,7,8,1\n1,2,3,4,5,six,7,8,1\n", ["row 3", "'x.5'", "'six'"]),
    (HEADER + "1,2,3,4,5,6,7,8,1\n\n1,2,3,4,5,,7,8,1\n", ["row 4", "'x.5'", "empty"]),
    (HEADER + "1,2,3,4,5,6,7,8,inf\n", ["row 2", "'y'", "inf"]),
    (HEADER + "1,2,3,4,5,6,7,8\n", ["row 2", "8 columns", "expected 9"]),
    ("1,2,3\n", ["3 columns", "header"]),
    ("", ["empty"]),
    (HEADER, ["no rows"]),
])
def test_csv_errors_name_column_and_row(tmp_path, logistic, text, words):
    with pytest.raises(DataError) as e:
        load_data(write(tmp_path / "bad.csv", text), logistic)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert "bad.csv" in str(e.value)


def test_integer_class_labels(tmp_path, softmax):
    text = "x.0,x.1,x.2,x.3,label\n1,2,3,4,1\n1,2,3,4,1.5\n"
    with pytest.raises(DataError, match=r"row 3, column 'label': 1.5 is not an integer"):
        load_data(write(tmp_path / "s.csv", text), softmax)
    with pytest.raises(DataError, match=r"sample 1, column 'label': 0.5 is not an integer"):
        lossc.train(softmax, data={"x": np.zeros((2, 4)), "label": np.array([1.0, 0.5])})
    d = load_data(DATA / "softmax.csv", softmax)
    assert d["label"].dtype == np.int64 and set(np.unique(d["label"])) == {0, 1, 2}
    r = lossc.train(softmax, data=d, optimizer=lossc.Adam(lr=0.05), epochs=5)
    assert r.history[-1] < r.history[0] * 0.7


def test_an_index_too_large_names_its_row_and_column(tmp_path):
    """It named the input's first column and no row."""
    m = lossc.compile("input t[3]: int\nparam v[4]\nloss = sum(v[t])\n")
    text = "t.0,t.1,t.2\n1,2,3\n0,1,1e300\n"
    with pytest.raises(DataError, match=r"row 3, column 't.2': 1e\+300 is too large for "
                                        r"an index \(input 't' is declared int"):
        load_data(write(tmp_path / "t.csv", text), m)
    with pytest.raises(DataError, match=r"sample 1, column 't.1': -9.22337e\+18 is too "
                                        "large for an index"):
        lossc.train(m, data={"t": np.array([[0.0, 1.0, 2.0], [3.0, -2.0 ** 63, 0.0]])})


def test_missing_file_and_no_input_model(tmp_path, logistic, rosenbrock):
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "nope.csv", logistic)
    with pytest.raises(DataError, match="no inputs"):
        load_data(DATA / "logistic.csv", rosenbrock)

# ---------------------------------------------------------------- scipy, metrics, files


def test_scipy_objective(logistic, data, lbfgs_optimum):
    fun, x0 = scipy_objective(logistic, x=data["x"], y=data["y"], lam=0.5)
    np.testing.assert_array_equal(x0, logistic.pack_params(logistic.init_params(0)))
    v, g = fun(x0)
    v2, g2 = logistic.value_and_grad(logistic.init_params(0), **data, lam=0.5)
    assert v == v2 and np.array_equal(g, logistic.pack_params(g2))
    assert fun.unpack(x0)["w"].shape == (8,) and fun.n_calls == 1
    # the optimum: gradient zero, and no better than what training reaches
    _, g = fun.__class__(logistic, logistic.bind(data))(lbfgs_optimum.x)
    assert np.linalg.norm(g) < 1e-6


def test_scipy_objective_float32_and_no_inputs(rosenbrock, data):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    m32 = lossc.compile(SAMPLES / "logistic.loss", dtype="float32")
    fun, x0 = m32.scipy_objective(x=data["x"], y=data["y"])
    v, g = fun(x0)
    assert type(v) is float and g.dtype == np.float64 and x0.dtype == np.float64
    fun, x0 = rosenbrock.scipy_objective()
    res = scipy_optimize.minimize(fun, x0, jac=True, method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(res.x, np.ones(5), atol=1e-6)


def test_per_sample_loss_and_accuracy(logistic, softmax, data):
    params = logistic.init_params(1)
    per = per_sample_loss(logistic, params, data)
    assert per.shape == (4000,) and np.mean(per) == pytest.approx(logistic.loss(params, **data))
    params = {"w": np.array([1.5, -2.0, 0.8, 0.0, 1.2, -0.6, 0.3, -1.1]), "b": np.array(-0.4)}
    direct = np.mean((data["x"] @ params["w"] + params["b"] > 0) == (data["y"] > 0.5))
    assert accuracy(logistic, params, data) == direct
    d = load_data(DATA / "softmax.csv", softmax)
    r = lossc.train(softmax, data=d, optimizer=lossc.Adam(lr=0.05), epochs=20)
    W, c = r.params["W"], r.params["c"]
    direct = np.mean(np.argmax(d["x"] @ W.T + c, axis=1) == d["label"])
    assert accuracy(softmax, r.params, d) == direct > 0.7
    with pytest.raises(ValueError, match="no input named"):
        accuracy(logistic, params, data, label="z")


def test_save_and_load_params(tmp_path, logistic):
    params = logistic.init_params(4)
    for name in ("p.npz", "p.json"):
        path = save_params(tmp_path / name, params)
        back = load_params(path, logistic)
        for k in params:
            np.testing.assert_array_equal(back[k], params[k])   # json is exact too
    assert save_params(tmp_path / "q", params).name == "q.npz"
    (tmp_path / "bad.json").write_text(json.dumps({"w": [1, 2]}))
    with pytest.raises(ValueError, match="'w' has shape"):
        load_params(tmp_path / "bad.json", logistic)
    with pytest.raises(ValueError, match="no value for parameter 'b'"):
        load_params(save_params(tmp_path / "c.npz", {"w": params["w"]}), logistic)


@pytest.mark.parametrize("values", [np.array(["0.5"] * 8), np.full(8, 1 + 2j),
                                    np.zeros(8, dtype="M8[s]")], ids=["str", "complex",
                                                                       "datetime"])
def test_saved_parameters_that_are_not_real_numbers_are_refused_naming_them(tmp_path,
                                                                            logistic, values):
    """Not converted (complex silently losing its imaginary part), nor a NumPy error
    that names neither the file nor the parameter."""
    path = tmp_path / "p.npz"
    np.savez(path, w=values, b=np.zeros(()))
    with pytest.raises(ValueError) as e:
        load_params(path, logistic)
    assert str(e.value) == (f"{path}: parameter 'w' must hold real numbers, got dtype "
                            f"{values.dtype}")


# ---------------------------------------------------------------- data layout

def at_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of `a` whose data starts `offset` bytes into a 64-byte cache line."""
    from lossc.runtime.calls import _addr
    raw = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = (-_addr(raw)) % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_lines_per_row_counts_the_cache_lines_rows_touch():
    from lossc.runtime.calls import lines_per_row, misaligned_rows
    assert lines_per_row(256, 0) == 4 and lines_per_row(256, 16) == 5
    assert lines_per_row(8, 0) == lines_per_row(8, 16) == 1
    # 32-byte rows 16 bytes into a line: every other one straddles two lines
    assert lines_per_row(32, 16) == 1.5 and lines_per_row(32, 0) == 1
    # 40-byte rows: their offsets cycle through the line whatever the start
    assert lines_per_row(40, 8) == lines_per_row(40, 0)
    x = np.arange(64.0 * 32).reshape(64, 32)
    assert misaligned_rows(at_offset(x, 16)) and misaligned_rows(at_offset(x, 8))
    read_only = at_offset(x, 16)
    read_only.flags.writeable = False
    assert misaligned_rows(read_only)
    assert not misaligned_rows(at_offset(x, 0))
    assert not misaligned_rows(at_offset(np.arange(64.0), 16))       # 8-byte rows
    assert not misaligned_rows(at_offset(x, 16)[:, ::2])               # not contiguous


def test_training_data_is_copied_to_line_aligned_rows(monkeypatch):
    from lossc.optim import prepare
    from lossc.runtime.calls import _addr
    x, y = at_offset(np.ones((100, 32)), 16), at_offset(np.ones(100), 16)
    taken = []
    out = prepare.line_aligned({"x": x, "y": y}, taken)
    assert len(taken) == 1 and np.shares_memory(out["x"], taken[0])
    assert _addr(out["x"]) % 64 == 0 and out["y"] is y        # y's rows gain nothing
    np.testing.assert_array_equal(out["x"], x)
    aligned = at_offset(np.ones((100, 32)), 0)
    assert prepare.line_aligned({"x": aligned, "y": y}, taken)["x"] is aligned
    monkeypatch.setattr(prepare, "ALIGN_MAX_BYTES", x.nbytes - 1)
    assert prepare.line_aligned({"x": x, "y": y}, taken)["x"] is x
    assert len(taken) == 1


def test_training_results_do_not_depend_on_where_the_data_lies(monkeypatch):
    """The same numbers at any offset into a cache line train to the same bits, those
    of the loop written out (the native shuffle and fused steps: n >= 2048), whether
    the run copies them to aligned rows or not."""
    from lossc.optim import prepare
    copies = []
    real = prepare.line_aligned
    monkeypatch.setattr(prepare, "line_aligned",
                        lambda d, taken: copies.append(1) or real(d, taken))
    monkeypatch.setattr(prepare, "ALIGN_MIN_EPOCHS", 2)
    m = lossc.compile(LOGISTIC_32)
    rng = np.random.default_rng(4)
    n = 2100
    x, y = rng.normal(size=(n, 32)), (rng.random(n) < 0.5) * 1.0
    theta0 = m.init_params(2)
    runs = [lossc.train(m, data={"x": at_offset(x, k), "y": at_offset(y, k)},
                        optimizer=lossc.SGD(lr=0.05), batch_size=64, epochs=2, seed=3,
                        init=theta0) for k in (0, 8, 16, 48)]
    assert len(copies) == 4
    monkeypatch.setattr(prepare, "ALIGN_MIN_EPOCHS", 3)       # (no copy for 2 epochs)
    runs.append(lossc.train(m, data={"x": at_offset(x, 16), "y": y},
                            optimizer=lossc.SGD(lr=0.05), batch_size=64, epochs=2, seed=3,
                            init=theta0))
    assert len(copies) == 4
    losses, p = sgd_by_hand(m, {"x": x, "y": y}, theta0, 0.05, 64, 2, 3)
    for r in runs:
        assert r.step_losses == losses
        np.testing.assert_array_equal(m.pack_params(r.last_params), p)


def test_a_run_reuses_the_scratch_memory_of_the_one_before(monkeypatch):
    """The aligned copy goes into scratch memory that the run gives back and the next
    run takes again: that run's results are those of its own data (the buffer's stale
    contents, the last run's data, are overwritten), and nothing is taken twice."""
    from lossc.optim import prepare
    from lossc.runtime import scratch
    monkeypatch.setattr(prepare, "ALIGN_MIN_EPOCHS", 2)
    scratch.clear()
    takes = []
    real_take = scratch.take
    monkeypatch.setattr(scratch, "take", lambda n: takes.append(real_take(n)) or takes[-1])
    m = lossc.compile(LOGISTIC_32)
    rng = np.random.default_rng(5)
    n = 2100
    theta0 = m.init_params(1)
    for k in range(3):
        x, y = rng.normal(size=(n, 32)), (rng.random(n) < 0.5) * 1.0
        r = lossc.train(m, data={"x": at_offset(x, 16), "y": y},
                        optimizer=lossc.SGD(lr=0.05), batch_size=64, epochs=2, seed=k,
                        init=theta0)
        losses, p = sgd_by_hand(m, {"x": x, "y": y}, theta0, 0.05, 64, 2, k)
        assert r.step_losses == losses
        np.testing.assert_array_equal(m.pack_params(r.last_params), p)
        assert scratch.kept_bytes() >= x.nbytes       # given back
    assert len(takes) == 3 and takes[1] is takes[0] and takes[2] is takes[0]
    scratch.clear()
    assert scratch.kept_bytes() == 0


def test_scratch_keeps_buffers_within_its_budget(monkeypatch):
    from lossc.runtime import scratch
    scratch.clear()
    a = scratch.take(1000)
    assert a.dtype == np.uint8 and a.nbytes >= 1000
    scratch.give(a)
    assert scratch.take(600) is a                 # within SLACK of its size
    scratch.give(a)
    assert scratch.take(400) is not a             # a would waste more than half
    assert scratch.take(2000) is not a            # too small
    b = scratch.take(1000)
    assert b is a and scratch.kept_bytes() == 0   # one user at a time
    monkeypatch.setattr(scratch, "KEPT_BYTES", 2500)
    scratch.give(b)
    c = np.empty(1200, dtype=np.uint8)
    d = np.empty(1300, dtype=np.uint8)
    scratch.give(c)
    scratch.give(d)                               # over the budget: the oldest (b) goes
    assert scratch.kept_bytes() == 2500
    assert scratch.take(1000) is c
    scratch.give(np.empty(3000, dtype=np.uint8))  # larger than the budget: not kept
    assert scratch.kept_bytes() == 1300
    scratch.clear()


@pytest.mark.parametrize("threshold", [None, 1])
@pytest.mark.parametrize("validation", [None, 0.25])
def test_monitor_passes_take_the_gradients_code_unless_the_run_is_long(
        monkeypatch, threshold, validation):
    # The monitor's objective-only passes (training set, validation split) go through
    # the gradient's code, compiled already, unless the run's passes cover
    # LOSS_UNIT_ROWS rows; then through the objective's own code. The MLP's two codes
    # can differ in the last bit (here after epoch 1), so each history entry is checked,
    # exactly, against the code it must come from.
    from lossc.optim import objectives
    if threshold is not None:
        monkeypatch.setattr(objectives, "LOSS_UNIT_ROWS", threshold)
    m = lossc.compile(SAMPLES / "mlp.loss", cache=False)
    rng = np.random.default_rng(4)
    d = {"x": rng.normal(size=(300, 16)), "y": rng.normal(size=300)}
    calls = []
    real_loss_flat = m.loss_flat
    monkeypatch.setattr(m, "loss_flat", lambda *a, **k: calls.append(1) or
                        real_loss_flat(*a, **k))
    thetas = []
    r = lossc.train(m, data=d, optimizer=lossc.Adam(0.01), batch_size=32, epochs=4,
                    seed=1, validation=validation, patience=10,
                    callback=lambda info: thetas.append(info.theta.copy()))
    passes = 4 if validation is None else 1 + 2 * 4    # (the split: also at the start)
    assert len(calls) == (0 if threshold is None else passes)
    assert len(r.val_history) == (0 if validation is None else 5)
    if validation is None:
        for e, theta in enumerate(thetas, start=1):
            p = m.unpack_params(theta)
            by_gradient, by_loss = m.value_and_grad(p, **d)[0], m.loss(p, **d)
            assert r.history[e] == (by_gradient if threshold is None else by_loss)
            assert r.history[e] == pytest.approx(by_loss, rel=1e-13)
