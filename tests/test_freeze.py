"""freeze= (and --freeze): parameters a training run leaves at their initial values, in
the native steps and the Python ones alike."""
import numpy as np
import pytest
from click.testing import CliRunner

import lossc
import lossc.runtime.fused as fused_mod
from conftest import SAMPLES
from lossc.cli import main
from lossc.optim import SGD, Adam, AdamW, RMSprop, TrainConfig

MLP = SAMPLES / "mlp.loss"
OPTIMIZERS = {
    "adam": lambda: Adam(0.02),
    "adamw": lambda: AdamW(0.02, weight_decay=0.1),           # decay would move them
    "adam_clipped": lambda: Adam(0.02, clip_norm=0.01),   # (the frozen ones count 0)
    "sgd": lambda: SGD(0.05, momentum=0.9, weight_decay=0.01),
    "rmsprop": lambda: RMSprop(0.01, centered=True, weight_decay=0.01),
}


@pytest.fixture(scope="module")
def mlp():
    m = lossc.compile(MLP, dims={"D": 4, "H": 6})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    data = {"x": x, "y": np.sin(x[:, 0]) + 0.1 * rng.normal(size=120)}
    init = m.init_params(1)
    init["b1"] = rng.normal(size=6)        # nonzero, so that decay would show
    init["b2"] = np.array(-0.0)            # -0.0 + 0 would be +0.0
    return m, data, init


def train(m, data, init, opt, steps_used, **kw):
    """lossc.train, recording which steps ran: 'native' or 'python'."""
    real = fused_mod.FusedSteps.run

    def run(self, *a):
        steps_used.add("native")
        return real(self, *a)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused_mod.FusedSteps, "run", run)
        r = lossc.train(m, data=data, optimizer=opt, init=init, seed=0, **kw)
    if "native" not in steps_used:
        steps_used.add("python")
    return r


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_frozen_parameters_are_bit_identical_native_and_python(mlp, name, monkeypatch):
    m, data, init = mlp
    frozen = ["b1", "b2"]
    used_native, used_python = set(), set()
    native = train(m, data, init, OPTIMIZERS[name](), used_native, batch_size=16,
                   epochs=3, freeze=frozen)
    monkeypatch.setattr(fused_mod, "supports", lambda optimizer: False)
    python = train(m, data, init, OPTIMIZERS[name](), used_python, batch_size=16,
                   epochs=3, freeze=frozen)
    assert used_native == {"native"} and used_python == {"python"}
    for r in (native, python):
        for k in frozen:
            assert r.last_params[k].tobytes() == np.asarray(init[k]).tobytes(), k
            assert r.params[k].tobytes() == np.asarray(init[k]).tobytes(), k
        assert not np.array_equal(r.last_params["W1"], init["W1"])    # the rest trained
    # the native steps are the Python loop's, bit for bit, frozen parameters and all
    for k in python.last_params:
        np.testing.assert_array_equal(native.last_params[k], python.last_params[k])


def test_freezing_is_not_merely_a_zero_gradient(mlp):
    # without freeze, weight decay moves the same parameters: the test above can fail
    m, data, init = mlp
    r = lossc.train(m, data=data, optimizer=AdamW(0.02, weight_decay=0.1), init=init,
                    batch_size=16, epochs=3)
    assert not np.array_equal(r.last_params["b1"], init["b1"])


@pytest.mark.parametrize("opt, kw", [
    (SGD(0.05, weight_decay=0.01), {"batch_size": None, "epochs": 5}),
    (lossc.LBFGS(), {"epochs": 10}),
    (lossc.NewtonCG(), {"epochs": 5}),
])
def test_full_batch_steps_keep_frozen_parameters(mlp, opt, kw):
    m, data, init = mlp
    if isinstance(opt, lossc.NewtonCG) and not hasattr(m, "hvp"):
        pytest.skip("the model has no hvp")
    r = lossc.train(m, data=data, optimizer=opt, init=init, freeze=["W1", "b2"], **kw)
    for k in ("W1", "b2"):
        assert r.last_params[k].tobytes() == np.asarray(init[k], dtype=m.dtype).tobytes()
    assert not np.array_equal(r.last_params["w2"], init["w2"])
    assert r.history[-1] < r.history[0]


def test_frozen_parameters_count_nothing_in_an_l1_penalty():
    """OWL-QN's pseudo-gradient on a frozen coordinate with an L1 weight was +-l1, not
    0: its direction and orthant projection moved w to 0 for the objective's values,
    while w was put back after each step, so b ended where no objective had been
    measured. SGD's tol_grad counted the frozen coordinates' weights and was never
    met. The frozen parameters' L1 weights are taken as 0: b reaches the optimum
    Newton-CG finds (b is unpenalized), and the reported objective is the model's."""
    m = lossc.compile(SAMPLES / "logistic.loss", cache=False)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(203, 8))
    data = {"x": X, "y": (X @ rng.normal(size=8) > 0).astype(float)}
    init = {"w": np.full(8, 0.3), "b": np.array(0.5)}
    opt = lossc.LBFGS(l1=lossc.optim.l1_weights(m, {"w": 0.05}))
    weights = opt.l1.copy()
    r = lossc.train(m, data, opt, freeze=["w"], init=init)
    want = lossc.train(m, data, lossc.NewtonCG(), freeze=["w"], init=init)
    assert r.params["b"] == pytest.approx(want.params["b"], rel=1e-4)      # (was -0.04)
    assert r.best_loss == pytest.approx(m.loss(r.params, **data), rel=1e-12)
    np.testing.assert_array_equal(opt.l1, weights)         # (the optimizer's own, kept)
    sgd = lossc.train(m, data, SGD(0.5, l1=0.05), batch_size=None, epochs=300,
                      tol_grad=1e-6, freeze=["w"], init=init)
    assert sgd.stopped == "tol_grad" and sgd.epochs < 300
    np.testing.assert_array_equal(sgd.params["w"], init["w"])


def test_freeze_mistakes(mlp):
    m, data, init = mlp
    with pytest.raises(ValueError, match=r"freeze: 'W3' is not a parameter of the model "
                                         r"\(parameters: W1, b1, w2, b2\)"):
        lossc.train(m, data=data, freeze=["b1", "W3"], epochs=1)
    with pytest.raises(TypeError, match="freeze must be a list of parameter names"):
        TrainConfig(freeze=[1])
    with pytest.raises(TypeError, match="freeze must be a list of parameter names"):
        TrainConfig(freeze=3)
    assert TrainConfig(freeze="b1").freeze == ("b1",)


def test_freeze_on_the_command_line(tmp_path):
    out = tmp_path / "p.npz"
    r = CliRunner().invoke(main, ["train", str(SAMPLES / "logistic.loss"), "--data",
                                  str(SAMPLES / "data" / "logistic.csv"), "--epochs", "2",
                                  "--freeze", "b", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert np.load(out)["b"] == 0.0 and np.any(np.load(out)["w"] != 0)
    r = CliRunner().invoke(main, ["train", str(SAMPLES / "logistic.loss"), "--data",
                                  str(SAMPLES / "data" / "logistic.csv"), "--freeze", "q",
                                  "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip() == ("lossc: error: freeze: 'q' is not a parameter of the model "
                                "(parameters: w, b)")
