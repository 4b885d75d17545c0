"""lossc.train's arguments: counts, tolerances, hyperparameters and the learning rates
a schedule gives are checked, with errors naming the argument."""
import math
import re

import numpy as np
import pytest

import lossc
from lossc.optim import schedules

MODEL = "input x\nparam w = 1\nhyper lam = 0\nloss = (w - x) ^ 2 + lam * w ^ 2\n"


@pytest.fixture(scope="module")
def model():
    return lossc.compile(MODEL, cache=False)


DATA = {"x": np.arange(10.0)}


@pytest.mark.parametrize("name", ["epochs", "steps", "patience"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -1, 0, 2.5, True, "3"])
def test_counts_must_be_positive_whole_numbers(model, name, value):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got"):
        lossc.train(model, data=DATA, **{name: value})


@pytest.mark.parametrize("value", [math.inf, math.nan, -1, 2.5])
def test_batch_size_must_be_a_whole_number(model, value):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        lossc.train(model, data=DATA, batch_size=value)


def test_whole_floats_and_numpy_integers_are_counts(model):
    r = lossc.train(model, data=DATA, epochs=3.0, batch_size=np.int64(4))
    assert r.epochs == 3 and r.steps == 9 and type(r.epochs) is int


@pytest.mark.parametrize("value", [-1, 1.5, "1", True, math.nan, [1]])
def test_the_seed_must_be_a_whole_number_at_least_zero(model, value):
    """NumPy's own messages named no argument ('expected non-negative integer', a
    SeedSequence TypeError for 1.5)."""
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0 \(or None\), got"):
        lossc.train(model, data=DATA, seed=value)


def test_seeds_that_are_whole_numbers_or_none(model):
    runs = [lossc.train(model, data=DATA, epochs=2, seed=seed).params["w"]
            for seed in (3, 3.0, np.int64(3))]
    assert runs[0] == runs[1] == runs[2]
    assert lossc.train(model, data=DATA, epochs=2, seed=None).ok
    # (the validation split and chunked data's partitions draw from the system too)
    from lossc.optim.chunked import in_chunks
    assert lossc.train(model, data=DATA, epochs=2, seed=None, validation=0.3).ok
    chunks = in_chunks({"x": np.arange(40.0)}, 10)
    assert lossc.train(model, data=chunks, epochs=2, seed=None, validation=0.25).ok


@pytest.mark.parametrize("make, name", [
    (lambda v: lossc.SGD(momentum=0.9, nesterov=v), "nesterov"),
    (lambda v: lossc.RMSprop(centered=v), "centered"),
    (lambda v: lossc.Adam(amsgrad=v), "amsgrad"),
    (lambda v: lossc.Adam(lazy=v), "lazy"),
    (lambda v: lossc.optim.TrainConfig(shuffle=v), "shuffle"),
])
@pytest.mark.parametrize("value", ["no", "False", 1, None])
def test_flags_must_be_true_or_false(make, name, value):
    """bool() took amsgrad="no" (or shuffle="no") for True."""
    with pytest.raises(ValueError, match=f"^{name} must be True or False, got "
                                         f"{re.escape(repr(value))}$"):
        make(value)
    assert make(np.True_) is not None


@pytest.mark.parametrize("make, name", [
    (lambda v: lossc.SGD(momentum=v), "momentum"),
    (lambda v: lossc.SGD(weight_decay=v), "weight_decay"),
    (lambda v: lossc.Adam(eps=v), "eps"),
    (lambda v: lossc.RMSprop(momentum=v), "momentum"),
])
def test_optimizer_arguments_must_be_finite(make, name):
    """momentum=inf trained and then 'diverged' with the advice of a smaller lr."""
    with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0, got inf$"):
        make(math.inf)


@pytest.mark.parametrize("make, name", [
    (lambda v: lossc.Adam(lr=v), "lr: the learning rate"),
    (lambda v: lossc.SGD(lr=v), "lr: the learning rate"),
    (lambda v: lossc.SGD(momentum=v), "momentum"),
    (lambda v: lossc.SGD(dampening=v), "dampening"),
    (lambda v: lossc.Adam(weight_decay=v), "weight_decay"),
    (lambda v: lossc.AdamW(clip_norm=v), "clip_norm"),
    (lambda v: lossc.Adam(eps=v), "eps"),
    (lambda v: lossc.Adam(betas=(0.9, v)), "betas"),
    (lambda v: lossc.RMSprop(alpha=v), "alpha"),
    (lambda v: lossc.RMSprop(momentum=v), "momentum"),
])
@pytest.mark.parametrize("value", ["0.1", None, True, [0.1], 1j])
def test_optimizer_arguments_must_be_numbers_when_made(make, name, value):
    """Adam(lr="0.1") was made, and failed at training's first step with "'>' not
    supported between instances of 'str' and 'int'". (clip_norm=None: no clipping.)"""
    if name == "clip_norm" and value is None:
        pytest.skip("clip_norm=None means no clipping")
    with pytest.raises(ValueError, match=f"^{re.escape(name)} must be .*, got "
                                         f"{re.escape(repr(value))}$"):
        make(value)


def test_adam_betas_must_be_a_pair():
    for betas in (0.9, (0.9,), (0.9, 0.99, 0.999)):
        with pytest.raises(ValueError, match=r"betas must be a pair \(beta1, beta2\)"):
            lossc.Adam(betas=betas)
    assert lossc.Adam(betas=[np.float32(0.5), 0.25]).betas == (0.5, 0.25)


@pytest.mark.parametrize("name", ["tol_grad", "tol_loss"])
@pytest.mark.parametrize("value", [math.nan, -1e-3])
def test_tolerances_must_be_numbers_at_least_zero(model, name, value):
    with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
        lossc.train(model, data=DATA, **{name: value})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_non_finite_hypers_are_refused_before_training(model, value):
    with pytest.raises(ValueError, match="hypers: 'lam' must be a finite number"):
        lossc.train(model, data=DATA, hypers={"lam": value}, epochs=2)


def test_validation_must_be_a_fraction(model):
    with pytest.raises(ValueError, match="validation must be a fraction"):
        lossc.train(model, data=DATA, validation=math.nan)


@pytest.mark.parametrize("rate, epoch", [
    (lambda lr, k: -lr, 1),
    (lambda lr, k: math.nan, 1),
    (lambda lr, k: lr * (-0.5) ** k, 2),        # an exponential decay of negative gamma
    (lambda lr, k: lr if k < 2 else math.inf, 3),
    # not numbers: None and an array raised out of the run, losing its epochs; a string
    # was taken as the number it spells
    (lambda lr, k: lr if k < 1 else None, 2), (lambda lr, k: "0.1", 1),
    (lambda lr, k: np.array([lr]), 1)])
def test_a_bad_rate_from_a_schedule_stops_the_run_keeping_the_best(model, rate, epoch):
    r = lossc.train(model, data=DATA, optimizer=lossc.SGD(lr=0.01), schedule=rate,
                    epochs=5, batch_size=None)
    assert r.stopped == "bad_lr" and not r.ok
    assert f"for epoch {epoch} (it must be a finite number >= 0)" in r.stopped_reason
    assert r.epochs == epoch - 1 and len(r.lr) == epoch - 1
    # the best of the epochs run (each of them improves on the last here)
    assert r.best_epoch == epoch - 1
    np.testing.assert_array_equal(r.params["w"], r.last_params["w"])
    assert np.isfinite(r.params["w"]) and r.best_loss == min(r.history)


@pytest.mark.parametrize("schedule", [schedules.exponential(1e200), schedules.step(1, 1e200)])
def test_a_schedule_whose_rate_overflows_stops_the_run(model, schedule):
    """gamma ^ k past the largest float is an infinite rate (Python's power raised
    OverflowError out of the run, a traceback on the command line)."""
    assert schedule(1.0, 2) == math.inf
    r = lossc.train(model, data=DATA, optimizer=lossc.SGD(lr=1e-300), schedule=schedule,
                    epochs=5, batch_size=None)
    assert r.stopped == "bad_lr" and r.epochs == 2
    assert "the schedule gave the learning rate inf for epoch 3" in r.stopped_reason


def test_a_schedule_may_give_zero(model):
    r = lossc.train(model, data=DATA, optimizer=lossc.SGD(lr=0.01),
                    schedule=schedules.cosine(2), epochs=4, batch_size=None)
    assert r.ok and r.lr == [0.01, 0.005, 0.0, 0.0]


def test_the_optimizers_rate_is_checked_when_training_starts(model):
    opt = lossc.Adam(lr=0.01)
    opt.lr = -0.01
    with pytest.raises(ValueError, match="learning rate must be a positive number"):
        lossc.train(model, data=DATA, optimizer=opt)


@pytest.mark.parametrize("make, text", [
    (lambda: schedules.exponential(-0.5), "exponential schedule: gamma"),
    (lambda: schedules.exponential(math.nan), "exponential schedule: gamma"),
    (lambda: schedules.step(2, math.inf), "step schedule: gamma"),
    (lambda: schedules.step(2.5), "step schedule: step_size"),
    (lambda: schedules.step(math.nan), "step schedule: step_size"),
    (lambda: schedules.cosine(math.inf), "cosine schedule: T_max"),
    (lambda: schedules.cosine(10, -1e-3), "cosine schedule: eta_min"),
    (lambda: schedules.parse("exponential:-2"), "exponential schedule: gamma")])
def test_schedules_check_their_arguments(make, text):
    with pytest.raises(ValueError, match=text):
        make()


def test_non_finite_hypers_at_call_time_propagate(model):
    """At call time a hyperparameter is a number like any other (as in NumPy or JAX):
    a NaN gives a NaN objective, an infinity what IEEE arithmetic makes of it."""
    theta = {"w": np.array(1.0)}
    value, grads = model.value_and_grad(theta, x=DATA["x"], lam=math.nan)
    assert math.isnan(value) and math.isnan(grads["w"])
    assert model.loss(theta, x=DATA["x"], lam=math.inf) == math.inf


def test_init_that_is_not_parameters_is_a_value_error_naming_it(model):
    """A TrainResult, a path or complex numbers were a TypeError from float(), a
    ValueError from NumPy, or taken with a ComplexWarning."""
    res = lossc.train(model, data=DATA, epochs=1)
    n = model.n_params
    for init, words in [(res, "got a TrainResult: pass its params or last_params"),
                        ("p.npz", "got 'p.npz' (a file's parameters: lossc.optim.load_params"),
                        (np.zeros(n, complex), "got an array of dtype complex128"),
                        (["a"] * n, "got an array of dtype <U1"),
                        (np.zeros((1, n)), f"got shape (1, {n})"),
                        ([1, [2, 3]], "init must be an array, got a ragged sequence")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            lossc.train(model, data=DATA, epochs=1, init=init)
    assert lossc.train(model, data=DATA, epochs=1, init=res.params).ok
