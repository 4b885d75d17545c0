"""The full-batch optimizers in the training driver: LBFGS (and OWL-QN with l1=),
NewtonCG on the model's Hessian-vector products, and the L1 proximal step of SGD and
Adam through the driver, against scipy's L-BFGS-B and scikit-learn's ElasticNet."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from lossc.cli import main
from lossc.optim import SGD, Adam, LBFGS, NewtonCG, l1_weights, schedules, train
from problems import sigmoid

scipy_optimize = pytest.importorskip("scipy.optimize")
sklearn_datasets = pytest.importorskip("sklearn.datasets")
sklearn_linear = pytest.importorskip("sklearn.linear_model")

# W9's model: W2's logistic regression with its ridge term
LOGISTIC = ("dim D = 32\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
            "z = dot(w, x) + b\nloss = softplus(z) - y * z + 1e-3 * sum(w ^ 2)\n")
# sklearn's ElasticNet objective but its L1 term, which the optimizer adds:
# 1/(2n) ||y - Xw - b||^2 + ridge / 2 ||w||^2 with ridge = alpha (1 - l1_ratio)
ELASTIC_NET = ("dim D = 10\ninput x[D]\ninput y\nparam w[D]\nparam b\nhyper ridge = 0\n"
               "loss = (dot(w, x) + b - y) ^ 2 / 2 + ridge / 2 * sum(w ^ 2)\n")


def logistic_data(n: int, d: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(scale=0.5, size=d)
    return {"x": X, "y": (rng.random(n) < sigmoid(X @ w + 0.3)).astype(np.float64)}


class Delegate:
    """A compiled model seen through another object: every attribute is the model's."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)


class WithHvp(Delegate):
    """LOGISTIC's model with `hvp(theta, v, **inputs, **hypers)` (the contract's
    signature, dicts like theta) computed exactly in NumPy from the inputs it is
    given: the Hessian of the mean of softplus(z) - y z plus 1e-3 |w|^2, times v.
    Records the calls and the rows they saw."""

    def __init__(self, model):
        super().__init__(model)
        self.calls, self.rows = 0, set()

    def hvp(self, theta, v, **inputs):
        assert set(inputs) == {"x", "y"}
        X = inputs["x"]
        self.calls += 1
        self.rows.add(len(X))
        p = sigmoid(X @ theta["w"] + theta["b"])
        s = p * (1 - p) * (X @ v["w"] + v["b"]) / len(X)
        return {"w": X.T @ s + 2e-3 * v["w"], "b": np.array(s.sum())}


class WithoutHvp(Delegate):
    def __getattr__(self, name):
        if name == "hvp":
            raise AttributeError(name)
        return super().__getattr__(name)


@pytest.fixture(scope="module")
def logistic():
    """W9's model (W2's logistic regression with its 1e-3 * sum(w ^ 2) term), D = 32."""
    return lossc.compile(LOGISTIC, cache=False)


@pytest.fixture(scope="module")
def w9(logistic):
    """W9 at N = 4,000 (the benchmark's is 100,000) and scipy's L-BFGS-B optimum of
    lossc's own objective, to its last digits."""
    data = logistic_data(4000, 32)
    fun, _ = logistic.scipy_objective(**data)
    ref = scipy_optimize.minimize(fun, np.zeros(33), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 10000,
                                           "maxfun": 10000})
    return data, ref


def zeros(model):
    return {p.name: np.zeros(p.shape) for p in model.params}


# ------------------------------------------------------------------ LBFGS

def to_the_optimum(model, data, ref, opt):
    """Train from zeros to opt's tol_grad; the objective there is scipy's optimum to
    1e-10 relative, and so are the parameters to 1e-6."""
    res = train(model, data, opt, init=zeros(model))
    assert res.stopped == "tol_grad", res.stopped_reason
    assert abs(res.best_loss - ref.fun) <= 1e-10 * abs(ref.fun)
    np.testing.assert_allclose(model.pack_params(res.params), ref.x, rtol=0, atol=1e-6)
    return res


def test_lbfgs_reaches_scipys_optimum(logistic, w9):
    data, ref = w9
    res = to_the_optimum(logistic, data, ref, LBFGS(tol_grad=1e-10, tol_loss=None))
    assert res.steps == res.epochs <= 40          # an epoch is one iteration


def test_lbfgs_records_as_the_first_order_optimizers_do(logistic, w9):
    data, _ = w9
    infos, progress = [], []
    res = train(logistic, data, LBFGS(), init=zeros(logistic), callback=infos.append,
                progress=lambda *a: progress.append(a))
    # history: the objective at the start and after each iteration, each lower
    assert len(res.history) == res.epochs + 1 and res.history[0] == pytest.approx(math.log(2))
    assert all(b < a for a, b in zip(res.history, res.history[1:]))
    assert res.best_epoch == res.epochs and res.best_loss == res.history[-1]
    assert [i.epoch for i in infos] == list(range(1, res.epochs + 1))
    assert [i.loss for i in infos] == res.history[1:]
    # one progress call a step, with the objective the step started from and the
    # training samples
    assert [p[2] for p in progress] == res.history[:-1] == res.step_losses
    assert [p[3] for p in progress] == [4000] * res.steps and res.samples == 4000 * res.steps
    np.testing.assert_array_equal(res.params["w"], res.last_params["w"])


def count_calls(monkeypatch, owner, name) -> list:
    """Wrap owner.name so that each call appends to the returned list."""
    calls, inner = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)
    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("monitor", ["full", "batches"])
def test_lbfgs_reads_the_data_once_a_trial_step(logistic, w9, monitor, monkeypatch):
    # each pass over the data is a line search's trial (value and gradient in one
    # call) but the first, at the initial parameters: an epoch's objective is the last
    # trial's, so monitor="batches" has nothing to verify at the end. The trials are
    # one native call each, through a call prepared once (Model.prepare); only the
    # first pass is a checked call.
    from lossc.optim.objectives import Objectives
    from lossc.runtime.callpaths import PreparedCall
    passes = count_calls(monkeypatch, logistic, "checked_value_and_grad_flat")
    prepared = count_calls(monkeypatch, logistic, "prepare")
    native = count_calls(monkeypatch, PreparedCall, "__call__")
    trials = count_calls(monkeypatch, Objectives, "smooth")
    res = train(logistic, w9[0], LBFGS(), init=zeros(logistic), monitor=monitor)
    assert res.stopped == "tol_grad" and len(trials) >= res.steps > 5
    assert len(passes) == 1 and len(prepared) == 1
    assert len(native) == len(trials)


def python_calls(run) -> int:
    """The Python functions run() calls (sys.setprofile's "call" events)."""
    import sys
    calls = [0]

    def profile(frame, event, arg):
        if event == "call":
            calls[0] += 1
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls[0]


def test_lbfgs_in_the_driver_takes_its_directions_from_native_code(logistic, w9, monkeypatch):
    # lossc_lbfgs_two_loop (codegen/two_loop.py): every quasi-Newton direction of the
    # run is one native call, none NumPy's two-loop loop; lossc.optim.lbfgs on a
    # callable keeps NumPy's
    from lossc.optim.quasi_newton import _NativeTwoLoop
    from lossc.optim import lbfgs
    native = count_calls(monkeypatch, _NativeTwoLoop, "direction")
    res = train(logistic, w9[0], LBFGS(), init=zeros(logistic))
    assert res.stopped == "tol_grad" and len(native) == res.steps - 1 > 5
    del native[:]
    lbfgs(lambda x: (float(x @ x), 2 * x), np.arange(1.0, 6.0))
    assert not native


def test_an_lbfgs_iteration_is_a_bounded_number_of_python_calls():
    # the Python work of an iteration (the direction, the line search's trial, the
    # driver's records), counted as calls: about 100 a step before the trials were prepared
    # calls and the line search's trials plain objects; 50 to 55 since (the count varies
    # by a few calls from run to run of the same code)
    m = lossc.compile(LOGISTIC.replace("D = 32", "D = 8"), cache=False)
    data = logistic_data(200, 8)

    def run(epochs):
        res = train(m, data, LBFGS(tol_grad=None, tol_loss=None), epochs=epochs)
        assert (res.stopped, res.steps) == ("epochs", epochs)
    run(3)
    per_iteration = (python_calls(lambda: run(15)) - python_calls(lambda: run(5))) / 10
    assert per_iteration <= 60


def test_batch_descent_draws_no_shuffler(logistic, w9, monkeypatch):
    # the epochs' shuffles are drawn for mini-batches only: a full-batch run (L-BFGS's,
    # or SGD's with batch_size=None) makes no generator for them
    import lossc.optim.driver as driver
    made = count_calls(monkeypatch, driver, "Shuffler")
    train(logistic, w9[0], LBFGS(), epochs=2, init=zeros(logistic))
    train(logistic, w9[0], SGD(lr=0.1), batch_size=None, epochs=2, init=zeros(logistic))
    assert not made
    train(logistic, w9[0], SGD(lr=0.1), batch_size=500, epochs=2, init=zeros(logistic))
    assert len(made) == 1


def test_lbfgs_on_a_batch_split_across_threads_takes_the_checked_call(w9, monkeypatch):
    # a prepared call runs on one thread: where the model splits the training set
    # across its threads, each trial is a checked (threaded) call instead
    data, ref = w9
    m = lossc.compile(LOGISTIC, cache=False).set_threads(2, min_samples_per_thread=500)
    passes = count_calls(monkeypatch, m, "checked_value_and_grad_flat")
    prepared = count_calls(monkeypatch, m, "prepare")
    res = to_the_optimum(m, data, ref, LBFGS(tol_grad=1e-10, tol_loss=None))
    assert not prepared and len(passes) > res.steps > 5


def test_lbfgs_stops_on_its_tol_loss_and_on_epochs(logistic, w9):
    data, _ = w9
    res = train(logistic, data, LBFGS(tol_grad=None, tol_loss=1e-6), init=zeros(logistic))
    assert res.stopped == "tol_loss" and "relative" in res.stopped_reason
    assert 1 < res.epochs < 20
    res = train(logistic, data, LBFGS(), epochs=3, init=zeros(logistic))
    assert (res.stopped, res.epochs, res.steps) == ("epochs", 3, 3)
    # train's own rules apply too: its tol_grad is on the gradient's 2-norm
    res = train(logistic, data, LBFGS(tol_grad=None), tol_grad=1e-3, init=zeros(logistic))
    assert res.stopped == "tol_grad" and "1e-03" not in res.stopped_reason


@pytest.mark.parametrize("opt", [LBFGS, NewtonCG])
def test_a_config_takes_the_full_batch_defaults_as_keywords_do(logistic, w9, opt):
    """config=TrainConfig(...) had batch_size 64 (refused) and 10 epochs, where the
    same options as keywords run in batch descent for up to 1000 iterations."""
    from lossc.optim import TrainConfig
    data, _ = w9
    want = train(logistic, data, opt(tol_grad=1e-12, tol_loss=None))
    for config in (TrainConfig(), TrainConfig(batch_size=None)):
        got = train(logistic, data, opt(tol_grad=1e-12, tol_loss=None), config=config)
        assert (got.stopped, got.epochs) == (want.stopped, want.epochs)
        assert want.epochs > 10 or opt is NewtonCG
        assert got.best_loss == want.best_loss
    assert train(logistic, data, opt(), config=TrainConfig(epochs=3)).epochs <= 3


@pytest.mark.parametrize("opt", [LBFGS, NewtonCG])
def test_the_rates_list_the_iterations_run(logistic, w9, opt):
    """An iteration that found the point converged before its step recorded a rate."""
    data, _ = w9
    res = train(logistic, data, opt())
    assert res.stopped == "tol_grad" and len(res.lr) == res.epochs == len(res.history) - 1
    again = train(logistic, data, opt(), init=res.params)
    assert (again.epochs, again.lr) == (0, [])


def test_lbfgs_relative_tol_grad_is_scaled_by_the_initial_objective(w9):
    # a relative tol_grad stops at |g|_inf <= tol_grad * |f(theta0)|: the same
    # iterations whatever factor multiplies the objective, where an absolute one
    # takes more the larger the factor
    scaled = lossc.compile("hyper k = 1\n" + LOGISTIC.replace(
        "loss = softplus(z) - y * z + 1e-3 * sum(w ^ 2)",
        "loss = k * (softplus(z) - y * z + 1e-3 * sum(w ^ 2))"), cache=False)
    data = w9[0]

    def iterations(k, relative):
        res = train(scaled, data, LBFGS(tol_grad=1e-4, tol_loss=None,
                                        relative_tol_grad=relative),
                    init=zeros(scaled), hypers={"k": k})
        assert res.stopped == "tol_grad", res.stopped_reason
        return res.steps, res.stopped_reason
    one, reason = iterations(1.0, True)
    assert "initial objective" in reason
    assert iterations(1000.0, True)[0] == one
    assert iterations(1000.0, False)[0] > iterations(1.0, False)[0]
    with pytest.raises(ValueError, match="relative_tol_grad must be True or False"):
        LBFGS(relative_tol_grad="yes")


@pytest.mark.parametrize("method", [LBFGS, NewtonCG])
def test_trains_tolerance_is_not_cut_short_by_the_optimizers_defaults(logistic, w9, method):
    """train(tol_grad=1e-9) with an optimizer left at its defaults (tol_grad 1e-5 on the
    largest component) runs on to train's tolerance; one given to the optimizer itself
    still applies."""
    data, ref = w9
    model = logistic            # (NewtonCG on the model's own native hvp)
    res = train(model, data, method(), tol_grad=1e-9, init=zeros(model))
    _, g = model.value_and_grad_flat(model.pack_params(res.last_params), model.bind(data))
    assert res.stopped == "tol_grad" and "optimizer" not in res.stopped_reason
    assert np.linalg.norm(g) <= 1e-9
    assert abs(res.best_loss - ref.fun) <= 1e-12 * abs(ref.fun)
    res = train(model, data, method(tol_grad=1e-3), tol_grad=1e-12, init=zeros(model))
    assert res.stopped == "tol_grad" and "the optimizer's tol_grad" in res.stopped_reason
    # train's tol_loss alone also sets the defaults aside: none of the optimizer's stops
    res = train(model, data, method(), tol_loss=1e-300, epochs=60, init=zeros(model))
    assert "the optimizer's" not in res.stopped_reason, res.stopped_reason


def test_lbfgs_converged_at_the_start_takes_no_step(logistic, w9):
    data, ref = w9
    res = train(logistic, data, LBFGS(tol_grad=1e-6), init=logistic.unpack_params(ref.x))
    assert (res.stopped, res.steps, res.epochs) == ("tol_grad", 0, 0)


EXACT = ("dim D = 2\ninput x[D]\ninput y\nparam w[D]\nloss = (dot(w, x) - y) ^ 2\n",
         {"x": np.array([[1.0, 0], [0, 1], [1, 1], [2, 1]]),
          "y": np.array([1.0, 2, 3, 4])})       # w = (1, 2) fits every row exactly


@pytest.mark.parametrize("opt, optimum", [(NewtonCG, [1.0, 2.0]), (LBFGS, [1.0, 2.0]),
                                          (lambda: LBFGS(l1=100.0), [0.0, 0.0])],
                         ids=["newton_cg", "lbfgs", "owlqn"])
def test_a_zero_gradient_ends_the_run_as_converged(opt, optimum):
    """An exactly solvable least-squares fit (OWL-QN: with an L1 term that makes 0
    the optimum): train's own tol_loss turns the optimizer's tolerances off, and its
    steps reach, or start at, a gradient (pseudo-gradient) of exact zeros: converged,
    the parameters kept, where the steepest-descent step 1 / ||g|| divided by zero."""
    src, data = EXACT
    m = lossc.compile(src, cache=False)
    res = train(m, data, opt(), tol_loss=1e-12, epochs=50)
    assert res.ok and res.stopped in ("tol_grad", "tol_loss"), res.stopped_reason
    np.testing.assert_allclose(res.params["w"], optimum, atol=1e-6)
    start = train(m, data, opt(), tol_loss=1e-12, epochs=5, init={"w": np.array(optimum)})
    assert start.stopped == "tol_grad" and start.steps == 0, start.stopped_reason
    assert "the gradient is 0" in start.stopped_reason


def test_the_full_batch_optimizers_train_a_model_without_parameters():
    m = lossc.compile("input x\nloss = x ^ 2\n", cache=False)
    for opt in (LBFGS(), NewtonCG(), Adam()):
        res = train(m, {"x": np.arange(5.0)}, opt, epochs=3)
        assert res.stopped in ("tol_grad", "epochs"), (opt, res.stopped_reason)
        assert res.best_loss == pytest.approx(6.0)


def test_lossc_train_newton_cg_to_an_exact_fit_writes_its_parameters(tmp_path):
    src, data = EXACT
    (tmp_path / "ls.loss").write_text(src)
    rows = ["x.0,x.1,y"] + [f"{a:g},{b:g},{y:g}" for (a, b), y in zip(data["x"], data["y"])]
    (tmp_path / "ls.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "p.npz"
    r = CliRunner().invoke(main, ["train", str(tmp_path / "ls.loss"), "--data",
                                  str(tmp_path / "ls.csv"), "--optimizer", "newton-cg",
                                  "--tol-loss", "1e-12", "--out", str(out), "-q"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    np.testing.assert_allclose(np.load(out)["w"], [1.0, 2.0], rtol=1e-10)


PENALIZED = ("dim D = 20\ninput x[D]\ninput y\nparam w[D]\nparam b\nhyper C = 1\n"
             "reduce sum\nz = dot(w, x) + b\nloss = C * (softplus(z) - y * z)\n"
             "penalty = 0.5 * sum(w ^ 2)\n")


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0, 30.0])
@pytest.mark.parametrize("make", [lambda: LBFGS(tol_grad=1e-10, tol_loss=None),
                                  lambda: NewtonCG(tol_grad=1e-10, tol_loss=None)],
                         ids=["LBFGS", "NewtonCG"])
def test_full_batch_methods_return_the_iterate_that_converged(make, C):
    """Near the optimum the line search takes a step whose objective is a few ulps
    above the last (values within its value_rtol are judged by their slopes): that
    iterate, not an earlier one of an equal or lower rounded value, is the result
    once it meets tol_grad (logistic regression, as scikit-learn's with C)."""
    m = lossc.compile(PENALIZED)
    data = logistic_data(500, 20)
    r = train(m, data, make(), hypers={"C": C})
    assert r.stopped == "tol_grad" and r.best_epoch == r.epochs
    _, g = m.value_and_grad_flat(m.pack_params(r.params), m.bind(data, hypers={"C": C}))
    assert np.max(np.abs(g)) <= 1e-10


def test_lbfgs_keeps_the_best_on_a_validation_split(logistic, w9):
    data, _ = w9
    res = train(logistic, data, LBFGS(), validation=0.25, patience=2, epochs=60,
                init=zeros(logistic))
    assert len(res.val_history) == len(res.history)
    assert res.best_loss == min(res.val_history)
    assert res.best_epoch == res.val_history.index(res.best_loss)


def test_lbfgs_backs_off_a_nan_region():
    """100 x - log(x) from x = 0.5: the first trial step (a unit move along -g) lands at
    x < 0, where the log is NaN: the line search backs off; the run converges."""
    m = lossc.compile("param x\nloss = 100 * x - log(x)\n", cache=False)
    res = train(m, None, LBFGS(tol_grad=1e-9, tol_loss=None), init={"x": np.array(0.5)})
    assert res.ok and res.stopped == "tol_grad", res.stopped_reason
    assert res.params["x"] == pytest.approx(0.01, rel=1e-8)
    assert all(math.isfinite(v) for v in res.history)


def test_lbfgs_from_a_nan_start_is_diverged():
    m = lossc.compile("param x\nloss = 100 * x - log(x)\n", cache=False)
    res = train(m, None, LBFGS(), init={"x": np.array(-1.0)})
    assert res.stopped == "diverged" and not res.ok and res.steps == 0
    assert res.params["x"] == -1.0


def test_lbfgs_on_rosenbrock_without_data():
    m = lossc.compile("param x\nparam y\nloss = (1 - x) ^ 2 + 100 * (y - x ^ 2) ^ 2\n",
                      cache=False)
    res = train(m, None, LBFGS(tol_grad=1e-9, tol_loss=None),
                init={"x": np.array(-1.2), "y": np.array(1.0)})
    assert res.stopped == "tol_grad" and res.steps < 100
    assert abs(res.params["x"] - 1) < 1e-8 and abs(res.params["y"] - 1) < 1e-8


def test_lbfgs_in_float32(w9):
    data, ref = w9
    m = lossc.compile(LOGISTIC, dtype="float32", cache=False)
    res = train(m, data, LBFGS(tol_grad=1e-4), init=zeros(m))
    assert res.ok, res.stopped_reason
    assert abs(res.best_loss - ref.fun) <= 1e-5


def test_the_driver_steps_full_batch_optimizers_by_line_searches(logistic, w9):
    from lossc.optim.config import TrainConfig
    from lossc.optim.objectives import Objectives
    from lossc.optim.prepare import prepare
    from lossc.optim.stepper import LineSearchSteps, make_stepper
    with prepare(logistic, w9[0], TrainConfig(batch_size=None)) as prepared:
        objectives = Objectives(logistic, prepared.full, None, True)
        theta = np.zeros(33)
        initial = objectives.value_and_gradnorm(theta)
        stepper = make_stepper(logistic, LBFGS(), prepared, objectives, initial, False)
        assert isinstance(stepper, LineSearchSteps)


@pytest.mark.parametrize("make,options,match", [
    (LBFGS, {"batch_size": 64}, "full-batch optimizer.*batch_size=None"),
    (LBFGS, {"schedule": schedules.cosine()}, "schedule does not apply to LBFGS"),
    (lambda: LBFGS(l1=np.ones(5)), {}, r"l1 must be .*\(33,\)"),
    (lambda: SGD(l1=np.ones(5)), {}, r"l1 must be .*\(33,\)"),
])
def test_bad_runs_are_refused_before_anything_runs(logistic, w9, make, options, match):
    with pytest.raises(ValueError, match=match):
        train(logistic, w9[0], make(), **options)


@pytest.mark.parametrize("make,match", [
    (lambda: LBFGS(history_size=0), "history_size"), (lambda: LBFGS(tol_grad=-1), "tol_grad"),
    (lambda: LBFGS(lr=0), "learning rate"), (lambda: NewtonCG(max_cg=0), "max_cg"),
    (lambda: LBFGS(l1=-1.0), "l1"), (lambda: LBFGS(line_search_evals=0), "line_search_evals")])
def test_bad_options_name_the_option(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_full_batch_optimizers_take_no_gradient_step():
    with pytest.raises(TypeError, match="lossc.train.*lossc.optim.lbfgs"):
        LBFGS().step(np.zeros(3), np.zeros(3))


# ------------------------------------------------------------------ NewtonCG

def test_newton_cg_reaches_scipys_optimum_on_exact_hessian_products(logistic, w9):
    """NewtonCG through the driver, model.hvp supplied by a NumPy double computing the
    exact Hessian product: scipy's optimum in a few Newton iterations, each hvp call
    on the training data and the run's hypers."""
    model = WithHvp(logistic)
    res = to_the_optimum(model, w9[0], w9[1], NewtonCG(tol_grad=1e-10, tol_loss=None))
    assert res.steps <= 12 and model.calls > 0
    assert model.rows == {4000}


def test_newton_cg_takes_the_training_split(logistic, w9):
    data, _ = w9
    model = WithHvp(logistic)
    res = train(model, data, NewtonCG(), validation=0.25, epochs=3, init=zeros(logistic))
    assert res.ok and model.rows == {3000}


def test_newton_cg_interrupted_in_an_iteration_keeps_the_last_one(logistic, w9):
    """Ctrl-C inside an iteration (here in its third Hessian-vector product): the run
    stops as "interrupted" with the parameters of the iterations before, untouched by
    the unfinished one."""
    data, _ = w9

    class Interrupting(WithHvp):
        def hvp(self, theta, v, **inputs):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().hvp(theta, v, **inputs)
    infos = []
    res = train(Interrupting(logistic), data, NewtonCG(max_cg=1), callback=infos.append,
                init=zeros(logistic))
    assert (res.stopped, res.steps, res.epochs) == ("interrupted", 2, 2) and not res.ok
    np.testing.assert_array_equal(logistic.pack_params(res.last_params), infos[-1].theta)
    assert res.best_epoch == 2


def test_newton_cg_needs_model_hvp(logistic, w9):
    with pytest.raises(ValueError, match=r"NewtonCG needs .*model\.hvp"):
        train(WithoutHvp(logistic), w9[0], NewtonCG())


@pytest.mark.skipif(not hasattr(lossc.Model, "hvp"),
                    reason="the compiled models have no Hessian-vector products yet")
def test_newton_cg_on_the_models_own_hvp(logistic, w9):
    to_the_optimum(logistic, w9[0], w9[1], NewtonCG(tol_grad=1e-10, tol_loss=None))


# ------------------------------------------------------------------ L1 and elastic net

@pytest.fixture(scope="module")
def diabetes():
    X, y = sklearn_datasets.load_diabetes(return_X_y=True)
    return {"x": X, "y": y}


@pytest.fixture(scope="module")
def enet_model():
    return lossc.compile(ELASTIC_NET, cache=False)


def sklearn_enet(data, alpha, l1_ratio):
    return sklearn_linear.ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-14,
                                     max_iter=1_000_000).fit(data["x"], data["y"])


def assert_matches(res, sk):
    w = res.params["w"]
    np.testing.assert_allclose(w, sk.coef_, rtol=0, atol=1e-6)
    assert abs(res.params["b"] - sk.intercept_) <= 1e-6
    assert (sk.coef_ == 0).any()
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)


@pytest.mark.parametrize("alpha,l1_ratio", [(0.01, 0.5), (0.1, 0.7), (1.0, 0.9)])
def test_lbfgs_l1_is_sklearns_elastic_net(enet_model, diabetes, alpha, l1_ratio):
    sk = sklearn_enet(diabetes, alpha, l1_ratio)
    l1 = l1_weights(enet_model, {"w": alpha * l1_ratio})
    res = train(enet_model, diabetes, LBFGS(l1=l1, tol_grad=1e-10, tol_loss=None),
                hypers={"ridge": alpha * (1 - l1_ratio)}, init=zeros(enet_model))
    assert res.stopped == "tol_grad", res.stopped_reason
    assert_matches(res, sk)
    # the objective recorded and judged is the penalized one
    value, _ = enet_model.value_and_grad(res.params, **diabetes, ridge=alpha * (1 - l1_ratio))
    assert res.best_loss == pytest.approx(value + l1 @ np.abs(enet_model.pack_params(
        res.params)), rel=1e-12)


def test_sgd_l1_in_batch_descent_is_sklearns_elastic_net(enet_model, diabetes):
    """Full-batch SGD with l1 is the proximal gradient method (ISTA): with lr = 1/L it
    reaches the elastic net's solution, zeros exactly where sklearn's are."""
    alpha, l1_ratio = 1.0, 0.9
    sk = sklearn_enet(diabetes, alpha, l1_ratio)
    A = np.hstack([diabetes["x"], np.ones((len(diabetes["y"]), 1))])
    lipschitz = np.linalg.eigvalsh(A.T @ A / len(A))[-1] + alpha * (1 - l1_ratio)
    opt = SGD(lr=1 / lipschitz, l1=l1_weights(enet_model, {"w": alpha * l1_ratio}))
    res = train(enet_model, diabetes, opt, batch_size=None, epochs=3000,
                hypers={"ridge": alpha * (1 - l1_ratio)}, init=zeros(enet_model))
    assert_matches(res, sk)


def test_adam_l1_through_the_driver_finds_the_elastic_nets_zeros(enet_model, diabetes):
    """Adam's proximal step (Python steps: the native fused ones have none): sklearn's
    zeros exactly, the coefficients to 1e-3 (Adam's rate decays, it does not solve to
    the last digits)."""
    alpha, l1_ratio = 1.0, 0.9
    sk = sklearn_enet(diabetes, alpha, l1_ratio)
    opt = Adam(lr=2.0, l1=l1_weights(enet_model, {"w": alpha * l1_ratio}))
    res = train(enet_model, diabetes, opt, batch_size=None, epochs=4000,
                schedule=schedules.exponential(0.998),
                hypers={"ridge": alpha * (1 - l1_ratio)}, init=zeros(enet_model))
    np.testing.assert_array_equal(res.params["w"] == 0, sk.coef_ == 0)
    np.testing.assert_allclose(res.params["w"], sk.coef_, rtol=0, atol=1e-3)


def test_mini_batch_l1_monitors_the_penalized_objective(enet_model, diabetes):
    l1 = l1_weights(enet_model, {"w": 0.5})
    for monitor in ("full", "batches"):
        res = train(enet_model, diabetes, SGD(lr=0.05, l1=l1), batch_size=32, epochs=2,
                    monitor=monitor, hypers={"ridge": 0.0}, init=zeros(enet_model))
        value, _ = enet_model.value_and_grad(res.last_params, **diabetes, ridge=0.0)
        penalty = l1 @ np.abs(enet_model.pack_params(res.last_params))
        if monitor == "full":
            assert res.history[-1] == pytest.approx(value + penalty, rel=1e-12)
        else:       # the epoch's batch objectives combined, plus the penalty at its end
            batches = np.average(res.step_losses[-14:], weights=[32] * 13 + [26])
            assert res.history[-1] == pytest.approx(batches + penalty, rel=1e-12)


# ------------------------------------------------------------------ the command line

def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture()
def logistic_files(tmp_path):
    src = tmp_path / "logit.loss"
    src.write_text(LOGISTIC)
    data = tmp_path / "d.npz"
    np.savez(data, **logistic_data(500, 32))
    return src, data, tmp_path


def test_cli_trains_with_lbfgs(logistic_files, logistic):
    src, data, tmp = logistic_files
    code, out = cli("train", src, "--data", data, "--optimizer", "lbfgs", "--out",
                    tmp / "p.npz")
    assert code == 0, out
    assert "full batch, at most 1000 iterations; lbfgs lr 1" in out
    assert "Converged: the gradient's largest component" in out
    params = lossc.optim.load_params(tmp / "p.npz", logistic)
    _, g = logistic.value_and_grad(params, **dict(np.load(data)))
    assert max(np.max(np.abs(v)) for v in g.values()) <= 1e-5


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "lbfgs", "--batch-size", "32"], "--batch-size does not apply to lbfgs"),
    (["--optimizer", "lbfgs", "--momentum", "0.9"], "--momentum does not apply to lbfgs"),
    (["--optimizer", "lbfgs", "--schedule", "cosine"], "--schedule does not apply to lbfgs"),
    (["--optimizer", "newton-cg", "--weight-decay", "0.1"],
     "--weight-decay does not apply to newton-cg"),
    (["--optimizer", "lbfgs", "--lr", "0"], "learning rate must be a positive number"),
])
def test_cli_full_batch_option_mistakes(logistic_files, args, message):
    src, data, tmp = logistic_files
    code, out = cli("train", src, "--data", data, "--out", tmp / "p.npz", *args)
    assert code == 1
    assert out.strip().splitlines() == [f"lossc: error: {out.split('error: ')[1].strip()}"]
    assert message in out
    assert not (tmp / "p.npz").exists()


def test_cli_l1_is_the_elastic_net(tmp_path, diabetes):
    src = tmp_path / "enet.loss"
    src.write_text(ELASTIC_NET)
    data = tmp_path / "diabetes.npz"
    np.savez(data, **diabetes)
    sk = sklearn_enet(diabetes, 1.0, 0.9)
    code, out = cli("train", src, "--data", data, "--optimizer", "lbfgs", "--l1", "w=0.9",
                    "--hyper", "ridge=0.1", "--tol-grad", "0", "--out", tmp_path / "p.npz")
    assert code == 0, out
    assert "lbfgs lr 1, l1 w 0.9" in out
    w = np.load(tmp_path / "p.npz")["w"]
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, rtol=0, atol=1e-4)


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "rmsprop", "--l1", "w=0.1"], "--l1 does not apply to rmsprop"),
    (["--optimizer", "newton-cg", "--l1", "w=0.1"], "--l1 does not apply to newton-cg"),
    (["--l1", "v=0.1"], "--l1: unknown parameter 'v'; the parameters are ['w', 'b']"),
    (["--l1", "w=-1"], "--l1: the weight of w must be >= 0, got -1"),
    (["--l1", "w=nan"], "--l1: w must be a finite number"),
    (["--l1", "w"], "--l1: expected NAME=VALUE"),
])
def test_cli_l1_mistakes(logistic_files, args, message):
    src, data, tmp = logistic_files
    code, out = cli("train", src, "--data", data, "--out", tmp / "p.npz", *args)
    assert code == 1 and message in out and not (tmp / "p.npz").exists()


@pytest.mark.skipif(hasattr(lossc.Model, "hvp"), reason="the models have hvp")
def test_cli_newton_cg_without_hvp_is_a_one_line_error(logistic_files):
    src, data, tmp = logistic_files
    code, out = cli("train", src, "--data", data, "--optimizer", "newton-cg")
    assert code == 1 and "lossc: error: NewtonCG needs the model's Hessian-vector" in out
    assert "Traceback" not in out


@pytest.mark.skipif(not hasattr(lossc.Model, "hvp"),
                    reason="the compiled models have no Hessian-vector products yet")
def test_cli_trains_with_newton_cg(logistic_files):
    src, data, tmp = logistic_files
    code, out = cli("train", src, "--data", data, "--optimizer", "newton-cg", "--out",
                    tmp / "p.npz")
    assert code == 0, out
    assert "newton-cg lr 1" in out and "Converged: the gradient's largest component" in out
