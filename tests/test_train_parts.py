"""The training driver's pieces on their own: the options and the plan (config.py), the
prepared data (prepare.py), the steppers (stepper.py), the step log and the monitor
(monitor.py); and the command line asking the library for the plan."""
import ast
import dataclasses
import math
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import SAMPLES
from lossc.optim import DataError
from lossc.optim.config import DEFAULT_PATIENCE, TrainConfig, split_sizes
from lossc.optim.monitor import EpochInfo, Monitor, StepLog, Stop
from lossc.optim.objectives import Objectives
from lossc.optim.prepare import prepare
from lossc.optim.stepper import (Diverged, FullBatchSteps, NativeBatchSteps,
                                 PythonBatchSteps, make_stepper)

LOGISTIC = SAMPLES / "logistic.loss"


@pytest.fixture(scope="module")
def logistic():
    return lossc.compile(LOGISTIC)


@pytest.fixture(scope="module")
def rosenbrock():
    return lossc.compile(SAMPLES / "rosenbrock.loss")


def data(n, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 8)), "y": (rng.random(n) < 0.5) * 1.0}

# ---------------------------------------------------------------- options and plan


def test_config_normalizes_and_checks_its_options():
    c = TrainConfig(epochs=3.0, batch_size=np.int64(16), tol_loss=0, hypers={"lam": 1})
    assert (c.epochs, c.batch_size, c.tol_loss) == (3, 16, 0.0)
    assert type(c.epochs) is int and type(c.tol_loss) is float
    assert callable(c.schedule) and c.schedule(0.1, 5) == 0.1      # constant
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 4
    for bad, words in ((dict(steps=0), "steps must be a positive integer"),
                       (dict(batch_size=-1), "batch_size must be"),
                       (dict(tol_grad=math.nan), "tol_grad must be a number >= 0"),
                       (dict(validation=1.0), "validation must be a fraction"),
                       (dict(monitor="epochs"), "monitor must be one of"),
                       (dict(hypers={"lam": math.inf}), "hypers: 'lam' must be a finite")):
        with pytest.raises(ValueError, match=words):
            TrainConfig(**bad)
    with pytest.raises(TypeError, match="schedule must be a callable"):
        TrainConfig(schedule=0.1)


@pytest.mark.parametrize("name", ["progress", "callback"])
def test_a_progress_or_callback_that_is_not_a_function_is_refused_before_the_run(
        logistic, name):
    # (progress=False once trained to the first step and failed there, 'bool' object is
    # not callable, from inside the monitor)
    with pytest.raises(TypeError, match=f"{name} must be a function or None, got False"):
        lossc.train(logistic, data=data(10), epochs=1, **{name: False})


def test_an_unknown_option_names_itself_and_the_known_ones(logistic):
    with pytest.raises(TypeError, match=r"unexpected option 'epoch'.*batch_size, .*epochs"):
        lossc.train(logistic, data=data(10), epoch=3)
    with pytest.raises(TypeError, match="either as keywords or as config="):
        lossc.train(logistic, data=data(10), config=TrainConfig(), epochs=2)


@pytest.mark.parametrize("options, n, expected", [
    # (n_train, n_val, full_batch, batch_size, per_epoch, epochs, steps, patience)
    (dict(), 100, (100, 0, False, 64, 2, 10, None, None)),
    (dict(batch_size=30, epochs=4), 100, (100, 0, False, 30, 4, 4, None, None)),
    (dict(batch_size=None), 100, (100, 0, True, 100, 1, 10, None, None)),
    (dict(batch_size=500), 100, (100, 0, True, 100, 1, 10, None, None)),
    (dict(batch_size=10, steps=25), 100, (100, 0, False, 10, 10, 3, 25, None)),
    (dict(batch_size=10, steps=25, epochs=2), 100, (100, 0, False, 10, 10, 2, 25, None)),
    (dict(validation=0.25, batch_size=10), 100, (75, 25, False, 10, 8, 10, None,
                                                  DEFAULT_PATIENCE)),
    (dict(validation=0.25, patience=2), 100, (75, 25, False, 64, 2, 10, None, 2)),
])
def test_plan_of_a_data_model(logistic, options, n, expected):
    plan = TrainConfig(**options).plan(logistic, n)
    assert dataclasses.astuple(plan) == expected
    assert plan.total_steps == (plan.steps if plan.steps is not None
                                else plan.epochs * plan.per_epoch)


@pytest.mark.parametrize("options, epochs, steps", [
    (dict(), 1000, 1000), (dict(epochs=7), 7, 7), (dict(steps=9, epochs=20), 9, 9),
    (dict(steps=30, epochs=5), 5, 5)])
def test_plan_of_a_model_without_inputs_counts_steps(rosenbrock, options, epochs, steps):
    plan = TrainConfig(**options).plan(rosenbrock, 12345)
    assert (plan.n_train, plan.full_batch, plan.per_epoch) == (1, True, 1)
    assert (plan.epochs, plan.steps, plan.total_steps) == (epochs, steps, steps)


def test_a_split_leaving_either_side_empty_is_refused():
    assert split_sizes(10, None) == (10, 0) and split_sizes(10, 0.3) == (7, 3)
    for n, v in ((3, 0.1), (10, 0.99)):
        with pytest.raises(DataError, match="both need at least one"):
            split_sizes(n, v)


def test_the_run_follows_its_plan(logistic):
    config = TrainConfig(batch_size=16, steps=45, validation=0.2, patience=100, seed=3)
    plan = config.plan(logistic, 150)
    assert (plan.n_train, plan.per_epoch, plan.epochs) == (120, 8, 6)
    r = lossc.train(logistic, data=data(150), config=config)
    assert (r.steps, r.epochs) == (45, 6)
    assert r.samples == 5 * 120 + 5 * 16         # five whole epochs, five steps of a sixth
    assert len(r.val_history) == plan.epochs + 1

# ---------------------------------------------------------------- prepared data


def test_prepare_copies_misaligned_rows_and_gives_the_copies_back(logistic, monkeypatch):
    from lossc.optim import prepare as prepare_module
    from lossc.runtime import scratch
    from lossc.runtime.calls import _addr
    monkeypatch.setattr(prepare_module, "ALIGN_MIN_EPOCHS", 2)
    scratch.clear()
    x = np.empty(200 * 8 + 1)[1:].reshape(200, 8)    # 64-byte rows, 8 bytes off a line
    x[...] = data(200)["x"]
    d = {"x": x, "y": data(200)["y"]}
    with prepare(logistic, d, TrainConfig(epochs=2)) as prepared:
        copy = prepared.full.arrays[0]
        assert prepared.taken and _addr(copy) % 64 == 0
        np.testing.assert_array_equal(copy, x)
    assert prepared.taken == [] and scratch.kept_bytes() >= x.nbytes
    with prepare(logistic, d, TrainConfig(epochs=1)) as prepared:    # too short a run
        assert not prepared.taken and _addr(prepared.full.arrays[0]) == _addr(x)
    scratch.clear()


def test_prepare_splits_by_the_seed(logistic):
    d = data(200)
    with prepare(logistic, d, TrainConfig(validation=0.3, seed=5)) as a, \
            prepare(logistic, d, TrainConfig(validation=0.3, seed=5, epochs=1)) as b, \
            prepare(logistic, d, TrainConfig(validation=0.3, seed=6)) as c:
        assert (a.plan.n_train, a.plan.n_val) == (140, 60)
        assert (a.full.B, a.val.B) == (140, 60)
        np.testing.assert_array_equal(a.val.arrays[0], b.val.arrays[0])
        assert not np.array_equal(a.val.arrays[0], c.val.arrays[0])
        rows = {tuple(r) for r in a.full.arrays[0]} | {tuple(r) for r in a.val.arrays[0]}
        assert rows == {tuple(r) for r in d["x"]}


def test_prepare_of_a_model_without_inputs(rosenbrock):
    with prepare(rosenbrock, None, TrainConfig(steps=3)) as prepared:
        assert prepared.val is None and prepared.plan.total_steps == 3
    with pytest.raises(ValueError, match="takes no data"):
        prepare(rosenbrock, data(4), TrainConfig())

# ---------------------------------------------------------------- steppers


def epochs_of(stepper, theta, n, bs, epochs, seed=0, progress=None):
    """Run `epochs` epochs of a mini-batch stepper; returns its log."""
    log = StepLog(mean=True, progress=progress)
    rng = np.random.default_rng(seed)
    per_epoch = -(-n // bs)
    for _ in range(epochs):
        stepper.epoch(theta, rng.permutation(n), per_epoch, log)
        log.epoch += 1
    stepper.sync()
    return log


def test_native_and_python_steppers_give_the_same_bits(logistic):
    d = data(203)
    with prepare(logistic, d, TrainConfig(batch_size=16)) as prepared:
        runs = []
        for make in (lambda opt: NativeBatchSteps(logistic, opt, prepared.full, 16, False),
                     lambda opt: PythonBatchSteps(logistic, opt, prepared.full, 16)):
            opt = lossc.Adam(lr=0.05)
            theta = logistic.pack_params(logistic.init_params(1))
            log = epochs_of(make(opt), theta, 203, 16, 3)
            runs.append((theta, log, opt))
    (t1, log1, opt1), (t2, log2, opt2) = runs
    np.testing.assert_array_equal(t1, t2)
    assert log1.step_losses == log2.step_losses and len(log1.step_losses) == 39
    assert (log1.steps, log1.samples) == (log2.steps, log2.samples) == (39, 609)
    assert opt1.t == opt2.t == 39
    np.testing.assert_array_equal(opt1.state["exp_avg"], opt2.state["exp_avg"])


def test_make_stepper_picks_by_descent_mode_and_optimizer(logistic):
    class OwnRule(lossc.SGD):
        pass
    d = data(50)
    for options, opt, kind in ((dict(batch_size=None), lossc.Adam(), FullBatchSteps),
                               (dict(batch_size=8), lossc.Adam(), NativeBatchSteps),
                               (dict(batch_size=8), OwnRule(lr=0.1), PythonBatchSteps)):
        with prepare(logistic, d, TrainConfig(**options)) as prepared:
            objectives = Objectives(logistic, prepared.full, None, True)
            theta = logistic.pack_params(logistic.init_params())
            initial = objectives.value_and_gradnorm(theta)
            assert isinstance(make_stepper(logistic, opt, prepared, objectives, initial,
                                           False), kind)


def test_full_batch_steps_return_the_objective_they_computed(logistic):
    with prepare(logistic, data(40), TrainConfig(batch_size=None)) as prepared:
        objectives = Objectives(logistic, prepared.full, None, True)
        theta = logistic.pack_params(logistic.init_params())
        first = objectives.value_and_gradnorm(theta)
        stepper = FullBatchSteps(lossc.SGD(lr=0.1), objectives, 40, first)
        log = StepLog(mean=True)
        after = stepper.epoch(theta, None, 1, log)
        assert log.step_losses == [first[0]] and log.samples == 40
        assert after == Objectives(logistic, prepared.full, None, True).value_and_gradnorm(theta)


def test_steppers_stop_at_the_same_diverging_step_having_logged_those_before(logistic):
    """SGD with a huge rate: each stepper raises Diverged at the same step, the steps
    before it logged (the same ones, bit for bit) and none after."""
    d = data(640, seed=2)
    outcomes = []
    with prepare(logistic, d, TrainConfig(batch_size=8)) as prepared:
        for native in (True, False):
            opt = lossc.SGD(lr=1e6)
            stepper = (NativeBatchSteps(logistic, opt, prepared.full, 8, False) if native
                       else PythonBatchSteps(logistic, opt, prepared.full, 8))
            theta = logistic.pack_params(logistic.init_params(3))
            log = StepLog(mean=True)
            with pytest.raises(Diverged) as e:
                for _ in range(20):
                    stepper.epoch(theta, np.arange(640), 80, log)
            stepper.sync()
            assert all(map(math.isfinite, log.step_losses))
            assert opt.t == log.steps == len(log.step_losses) >= 1
            outcomes.append((log.step_losses, repr(e.value.value)))
    assert outcomes[0] == outcomes[1]


def huge_float32_gradients():
    """A float32 model whose gradients have elements near 1e19, all finite, their
    squared norm beyond float32's range; and data for it."""
    m = lossc.compile("dim D = 3\ninput x[D]\ninput y\nparam w[D] = normal(0, 0.1)\n"
                      "loss = 1e19 * (dot(w, x) - y) ^ 2\n", dtype="float32")
    x = np.random.default_rng(0).normal(size=(64, 3))
    return m, {"x": x, "y": x @ [1.0, -2.0, 0.5]}


def test_steppers_take_a_finite_float32_gradient_whose_squared_norm_overflows():
    """The native steps test each element of the gradient; the Python steps tested its
    squared norm, which overflows float32, and stopped at the first step as diverged.
    Both now run every step."""
    m, d = huge_float32_gradients()
    logs = []
    with prepare(m, d, TrainConfig(batch_size=16)) as p:
        for native in (True, False):
            opt = lossc.Adam(0.05)
            stepper = (NativeBatchSteps(m, opt, p.full, 16, False) if native
                       else PythonBatchSteps(m, opt, p.full, 16))
            theta = m.pack_params(m.init_params(3))
            log = StepLog(mean=True)
            with np.errstate(over="ignore"):        # (as lossc.train runs the steps)
                for _ in range(3):
                    stepper.epoch(theta, np.arange(64), 4, log)
            stepper.sync()
            assert opt.t == log.steps == 12
            logs.append(log.step_losses)
    assert max(logs[0]) > 1e19 and all(map(math.isfinite, logs[0]))
    np.testing.assert_allclose(logs[0], logs[1], rtol=1e-5)


@pytest.mark.parametrize("options", [{"batch_size": None}, {"tol_grad": 1e-30}],
                         ids=["batch descent", "tol_grad"])
def test_a_finite_float32_gradient_has_a_finite_norm(options):
    """The gradient norm of a float32 gradient whose squared norm overflows float32
    (batch descent's and tol_grad's) is finite: it was infinite, and the run stopped
    after its first epoch as diverged."""
    m, d = huge_float32_gradients()
    theta = m.pack_params(m.init_params(0))
    with prepare(m, d, TrainConfig(batch_size=None)) as p, np.errstate(over="ignore"):
        _, norm = Objectives(m, p.full, None, True).value_and_gradnorm(theta)
    _, g = m.value_and_grad_flat(theta, m.bind(d))
    assert norm == pytest.approx(np.linalg.norm(g.astype(np.float64)), rel=1e-6)
    r = lossc.train(m, data=d, optimizer=lossc.Adam(0.05), epochs=3, **options)
    assert r.stopped == "epochs", r.stopped_reason


class BacktrackingSteps:
    """A full-batch method written to the interface stepper.py describes: steepest
    descent whose step halves until the objective decreases (several evaluations a
    step, at points of its own), ending the run with Stop("line_search") when none
    does."""

    def __init__(self, objectives, initial, rows, max_halvings=30):
        self.objectives, self.rows, self.max_halvings = objectives, rows, max_halvings
        self.loss, _ = initial
        self.g = objectives.g.copy()
        self.x, self.gx = np.empty_like(self.g), np.empty_like(self.g)
        self.evaluations = 0

    def epoch(self, theta, order, count, log):
        assert order is None and count == 1
        step = 1e3                 # far too long a first trial: the search must halve it
        for _ in range(self.max_halvings):
            np.subtract(theta, step * self.g, out=self.x)
            value = self.objectives.value_and_grad(self.x, self.objectives.full, self.gx)
            self.evaluations += 1
            if value < self.loss:
                break
            step /= 2
        else:
            raise Stop("line_search", "the line search found no decrease")
        theta[...] = self.x
        log.record(self.loss, self.rows)
        self.loss, self.g[...] = value, self.gx
        return value, math.sqrt(float(np.dot(self.g, self.g)))

    def sync(self):
        pass


def test_a_full_batch_method_with_a_line_search_plugs_into_the_driver(logistic, monkeypatch):
    """A stepper whose step evaluates the objective several times: the run makes no
    pass of its own besides the initial one (the stepper returns the objective it
    computed), records one step an epoch, and a Stop the stepper raises ends the run
    with its word and the best parameters."""
    from lossc.optim import driver
    made, calls = [], []
    real_value_and_grad = Objectives.value_and_grad

    def counted(self, theta, data, grad_out):
        calls.append(1)
        return real_value_and_grad(self, theta, data, grad_out)

    def backtracking(model, opt, prepared, objectives, initial, sync_each_epoch,
                     train_has_tolerance):
        assert prepared.plan.full_batch
        made.append(BacktrackingSteps(objectives, initial, prepared.full.B,
                                      max_halvings=made_halvings))
        return made[-1]
    monkeypatch.setattr(Objectives, "value_and_grad", counted)
    monkeypatch.setattr(driver, "make_stepper", backtracking)
    progress = []
    made_halvings = 30
    r = lossc.train(logistic, data=data(60), batch_size=None, epochs=4,
                    progress=lambda *a: progress.append(a))
    stepper = made[-1]
    assert (r.stopped, r.steps, r.epochs, r.samples) == ("epochs", 4, 4, 240)
    assert len(calls) == 1 + stepper.evaluations and stepper.evaluations > 4
    assert [a[0] for a in progress] == [1, 2, 3, 4]
    assert r.history == sorted(r.history, reverse=True) and r.step_losses == r.history[:4]
    assert r.best_epoch == 4 and r.history[-1] == stepper.loss
    np.testing.assert_array_equal(logistic.pack_params(r.last_params),
                                  logistic.pack_params(r.params))
    made_halvings = 0          # every search fails: the run stops at its first step
    r = lossc.train(logistic, data=data(60), batch_size=None, epochs=4)
    assert (r.stopped, r.stopped_reason, r.steps, r.best_epoch) == (
        "line_search", "the line search found no decrease", 0, 0)
    assert len(r.history) == 1


# ---------------------------------------------------------------- step log and monitor


def test_a_run_of_batches_is_logged_as_its_steps_one_by_one():
    losses = np.array([0.5, 0.25, 2.0, 1.0, 4.0])
    one_by_one, calls = StepLog(mean=True, progress=lambda *a: calls.append(a)), []
    in_bulk = StepLog(mean=True)
    for log in (one_by_one, in_bulk):
        log.record_batches(losses[:3], 0, 3, 4, 18)
        log.record_batches(losses[3:], 3, 2, 4, 18)        # the last batch: 2 rows
    assert one_by_one.step_losses == in_bulk.step_losses == losses.tolist()
    assert one_by_one.samples == in_bulk.samples == 18
    assert [rows for *_, rows in calls] == [4, 4, 4, 4, 2]
    expected = (4 * (0.5 + 0.25 + 2.0 + 1.0) + 2 * 4.0) / 18
    assert one_by_one.end_epoch() == in_bulk.end_epoch() == expected
    assert in_bulk.end_epoch() is None                     # the next epoch starts empty
    summed = StepLog(mean=False)
    summed.record_batches(losses, 0, 5, 4, 18)
    assert summed.end_epoch() == losses.sum()


def monitor(**kw):
    theta = np.zeros(2)
    kw.setdefault("validated", False)
    kw.setdefault("judged_by_batches", False)
    kw.setdefault("total_epochs", 10)
    return Monitor(theta, StepLog(mean=True), **kw), theta


def epoch(mon, theta, loss, gnorm=None, val=None, lr=0.1):
    mon.begin_epoch(mon.epoch, lr)
    mon.log.record(loss, 1)
    mon.end_epoch(loss, gnorm, theta, lambda: val, 0.0)


def test_the_monitor_keeps_the_best_and_stops_after_patience():
    mon, theta = monitor(patience=2)
    mon.start(5.0, lambda: None)
    theta[:] = 1
    epoch(mon, theta, 3.0)
    theta[:] = 2
    epoch(mon, theta, 4.0)
    with pytest.raises(Stop) as stop:
        epoch(mon, theta, 3.5)
    assert stop.value.stopped == "early_stop" and "not improved for 2 epochs" in stop.value.reason
    assert (mon.best_loss, mon.best_epoch, mon.best_step) == (3.0, 1, 1)
    np.testing.assert_array_equal(mon.best_theta, [1, 1])
    assert mon.history == [5.0, 3.0, 4.0, 3.5] and mon.lr == [0.1] * 3


def test_the_monitor_judges_by_validation_when_there_is_a_split():
    mon, theta = monitor(validated=True, patience=5)
    mon.start(5.0, lambda: 6.0)
    epoch(mon, theta, 1.0, val=7.0)         # training better, validation worse
    assert mon.best_loss == 6.0 and mon.best_epoch == 0 and mon.val_history == [6.0, 7.0]


@pytest.mark.parametrize("rule, kw, args, words", [
    ("tol_grad", dict(tol_grad=1e-3), (4.0, 1e-4), "gradient norm is 0.0001 <= 0.001"),
    ("tol_loss", dict(tol_loss=0.5), (4.7, None), "loss changed by 0.3 <= 0.5 in epoch 1"),
])
def test_the_monitor_stops_on_its_tolerances(rule, kw, args, words):
    mon, theta = monitor(**kw)
    mon.start(5.0, lambda: None)
    with pytest.raises(Stop) as stop:
        epoch(mon, theta, *args)
    assert stop.value.stopped == rule and words in stop.value.reason


def test_the_monitor_calls_back_and_reports_divergence_and_bad_rates():
    seen = []
    mon, theta = monitor(callback=lambda info: seen.append(info) or info.epoch == 2)
    mon.start(5.0, lambda: None)
    epoch(mon, theta, 4.0)
    with pytest.raises(Stop, match="stopped by the callback after epoch 2"):
        epoch(mon, theta, 3.0)
    assert [i.epoch for i in seen] == [1, 2] and isinstance(seen[0], EpochInfo)
    assert (seen[1].steps, seen[1].best_loss, seen[1].val_loss) == (2, 3.0, None)
    stop = mon.diverged(math.inf)
    assert stop.stopped == "diverged" and "became inf at step 3 (epoch 3)" in stop.reason
    assert "it was 0.1" in stop.reason
    with pytest.raises(Stop, match=r"after step 2 \(end of epoch 3\)"):
        mon.end_epoch(math.nan, None, theta, lambda: None, 0.0)
    with pytest.raises(Stop, match="learning rate -1.0 for epoch 3") as bad:
        mon.begin_epoch(2, -1)
    assert bad.value.stopped == "bad_lr"
    assert mon.interrupted().reason.startswith("interrupted at step 3 (epoch 3)")


def test_unverified_bests_fall_back_to_the_latest_finite_one():
    mon, theta = monitor(judged_by_batches=True)
    mon.start(5.0, lambda: None)
    for k, loss in enumerate([4.0, 3.0, 2.0], start=1):
        theta[:] = k
        epoch(mon, theta, loss)
    finite = {1.0: True, 2.0: False, 3.0: False}
    mon.verify_best(lambda t: finite[float(t[0])])
    assert (mon.best_loss, mon.best_epoch) == (4.0, 1)
    np.testing.assert_array_equal(mon.best_theta, [1, 1])
    mon.verify_best(lambda t: False)          # none finite: the initial parameters
    assert (mon.best_loss, mon.best_epoch) == (5.0, 0)
    np.testing.assert_array_equal(mon.best_theta, [0, 0])

# ---------------------------------------------------------------- the command line


def test_the_optim_package_imports_nothing_of_the_command_line():
    """lossc.optim is a library: the command line (click, lossc.cli*) is built on it,
    never the other way round."""
    root = pathlib.Path(lossc.__file__).parent / "optim"
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name != "click" and not name.startswith("lossc.cli"), \
                    f"{path.name} imports {name}"


def test_the_command_line_shows_the_plan_the_driver_trains_by(tmp_path, monkeypatch):
    from lossc.cli import main
    plans = []
    real_plan = TrainConfig.plan
    monkeypatch.setattr(TrainConfig, "plan",
                        lambda self, *a: plans.append(real_plan(self, *a)) or plans[-1])
    r = CliRunner().invoke(main, [
        "train", str(LOGISTIC), "--data", str(SAMPLES / "data" / "logistic.csv"),
        "--validation", "0.3", "--batch-size", "100", "--steps", "70",
        "--out", str(tmp_path / "p.npz")])
    assert r.exit_code == 0, r.output
    cli_plan, run_plan = plans          # the command's, then the driver's own
    assert cli_plan == run_plan
    assert (f"training logistic.loss: {cli_plan.n_train} samples (+{cli_plan.n_val} for "
            f"validation), {cli_plan.per_epoch} steps an epoch, {cli_plan.epochs} epochs"
            in r.output)
    assert (cli_plan.n_train, cli_plan.n_val, cli_plan.per_epoch, cli_plan.epochs) == \
        (2800, 1200, 28, 3)
    assert "70 steps, 3 epochs" in r.output


def test_a_split_the_driver_refuses_is_refused_before_the_run_is_described(tmp_path):
    from lossc.cli import main
    r = CliRunner().invoke(main, [
        "train", str(LOGISTIC), "--data", str(SAMPLES / "data" / "logistic.csv"),
        "--validation", "0.0001", "--out", str(tmp_path / "p.npz")])
    assert r.exit_code == 1
    assert "both need at least one" in r.output and "training logistic.loss" not in r.output
