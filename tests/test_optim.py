"""Optimizers against textbook updates written here in NumPy (and torch.optim when it is
installed), the training driver, data loading, and `lossc train`/`eval` end to end."""
import json
import subprocess
import sys

import numpy as np
import pytest

import lossc
from conftest import ROOT, SAMPLES
from lossc.optim import DataError, load_data
from lossc.optim import schedules
from lossc.optim.optimizers import SGD, Adam, AdamW, RMSprop

# ---------------------------------------------------------------- optimizers


def quad_grad(p):
    """Gradient of a fixed anisotropic quadratic plus a quartic: a small real problem."""
    A = np.diag([1.0, 3.0, 0.5, 2.0])
    return A @ p + 0.1 * p ** 3 - np.array([1.0, -2.0, 0.5, 0.0])


def reference(kind, cfg, p, steps):
    """The textbook update rules, written independently of lossc.optim."""
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    a = np.zeros_like(p)
    buf = None
    out = []
    for t in range(1, steps + 1):
        g = quad_grad(p)
        if cfg.get("clip_norm"):
            n = np.linalg.norm(g)
            if n > cfg["clip_norm"]:
                g = g * cfg["clip_norm"] / (n + 1e-6)
        lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
        if kind == "sgd":
            g = g + wd * p
            mu = cfg.get("momentum", 0.0)
            if mu:
                buf = g.copy() if buf is None else mu * buf + (1 - cfg.get("dampening", 0)) * g
                g = g + mu * buf if cfg.get("nesterov") else buf
            p = p - lr * g
        elif kind == "rmsprop":
            g = g + wd * p
            al = cfg.get("alpha", 0.99)
            v = al * v + (1 - al) * g * g
            if cfg.get("centered"):
                a = al * a + (1 - al) * g
                d = np.sqrt(v - a * a) + 1e-8
            else:
                d = np.sqrt(v) + 1e-8
            if cfg.get("momentum", 0) > 0:
                m = cfg["momentum"] * m + g / d
                p = p - lr * m
            else:
                p = p - lr * g / d
        else:
            b1, b2 = 0.9, 0.999
            if kind == "adamw":
                p = p * (1 - lr * wd)
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mh = m / (1 - b1 ** t)
            vv = v
            if cfg.get("amsgrad"):
                vmax = np.maximum(vmax, v)
                vv = vmax
            vh = vv / (1 - b2 ** t)
            p = p - lr * mh / (np.sqrt(vh) + 1e-8)
        out.append(p.copy())
    return out


CONFIGS = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.5, clip_norm=1.0)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, weight_decay=0.01, amsgrad=True)),
    ("adamw", dict(lr=0.05, weight_decay=0.1)),
]


def make(kind, cfg):
    return {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}[kind](**cfg)


@pytest.mark.parametrize("kind, cfg", CONFIGS, ids=lambda c: str(c))
def test_optimizer_matches_textbook_update(kind, cfg):
    p0 = np.array([0.3, -1.2, 2.0, 0.7])
    opt, p = make(kind, cfg), p0.copy()
    ref = reference(kind, cfg, p0, 100)
    for t in range(100):
        opt.step(p, quad_grad(p))
        np.testing.assert_allclose(p, ref[t], rtol=1e-12, atol=1e-14, err_msg=f"step {t + 1}")


@pytest.mark.parametrize("kind, cfg", CONFIGS, ids=lambda c: str(c))
def test_optimizer_matches_torch(kind, cfg):
    torch = pytest.importorskip("torch")
    torch_cfg = {k: v for k, v in cfg.items() if k != "clip_norm"}
    cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW}[kind]
    if kind == "adamw":
        torch_cfg.setdefault("weight_decay", 0.01)
    p0 = np.array([0.3, -1.2, 2.0, 0.7])
    tp = torch.tensor(p0.copy(), dtype=torch.float64, requires_grad=True)
    topt = cls([tp], **torch_cfg)
    opt, p = make(kind, cfg), p0.copy()
    for _ in range(100):
        topt.zero_grad()
        tp.grad = torch.tensor(quad_grad(tp.detach().numpy()), dtype=torch.float64)
        if cfg.get("clip_norm"):
            torch.nn.utils.clip_grad_norm_([tp], cfg["clip_norm"])
        topt.step()
        opt.step(p, quad_grad(p))
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_optimizer_on_dicts_and_reset():
    params = {"a": np.array([1.0, 2.0]), "b": np.array(3.0)}
    opt = SGD(lr=0.1)
    opt.step(params, {"a": np.array([1.0, 1.0]), "b": np.array(2.0)})
    np.testing.assert_allclose(params["a"], [0.9, 1.9])
    assert float(params["b"]) == pytest.approx(2.8)
    adam = Adam(lr=0.1)
    adam.step(np.zeros(2), np.ones(2))
    assert adam.t == 1 and adam.state
    adam.reset()
    assert adam.t == 0 and not adam.state


def test_schedules():
    assert schedules.Step(2, 0.5)(5) == 0.25
    assert schedules.Exponential(0.9)(2) == pytest.approx(0.81)
    c = schedules.Cosine(10)
    assert c(0) == 1 and c(10) == pytest.approx(0) and c(5) == pytest.approx(0.5)
    assert schedules.parse_schedule("step:3:0.5", 10) == schedules.Step(3, 0.5)
    with pytest.raises(ValueError):
        schedules.parse_schedule("wiggle", 10)

# ---------------------------------------------------------------- driver


@pytest.fixture(scope="module")
def logistic():
    return lossc.compile(SAMPLES / "logistic.loss")


@pytest.fixture(scope="module")
def logistic_data(logistic):
    return load_data(SAMPLES / "data" / "logistic.csv", logistic)


def test_adam_reaches_the_lbfgs_optimum(logistic, logistic_data):
    scipy = pytest.importorskip("scipy.optimize")
    fun, x0 = logistic.scipy_objective(**logistic_data)
    best = scipy.minimize(fun, x0, jac=True, method="L-BFGS-B",
                          options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    opt_loss = best.fun
    result = lossc.train(logistic, data=logistic_data, optimizer=lossc.Adam(lr=0.01),
                         batch_size=64, epochs=40, seed=0,
                         schedule=schedules.Cosine(40))
    assert result.best_loss - opt_loss < 1e-4
    assert result.best_loss >= opt_loss - 1e-12
    assert logistic.loss(result.params, **logistic_data) == pytest.approx(result.best_loss)


def test_same_seed_same_parameters(logistic, logistic_data):
    runs = [lossc.train(logistic, data=logistic_data, optimizer=lossc.Adam(lr=0.02),
                        batch_size=50, epochs=3, seed=7) for _ in range(2)]
    for k in runs[0].params:
        np.testing.assert_array_equal(runs[0].params[k], runs[1].params[k])
    other = lossc.train(logistic, data=logistic_data, optimizer=lossc.Adam(lr=0.02),
                        batch_size=50, epochs=3, seed=8)
    assert not np.array_equal(other.params["w"], runs[0].params["w"])


def test_descent_modes_and_partial_batch(logistic):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(10, 8)), (rng.random(10) < 0.5).astype(float)
    data = {"x": X, "y": Y}
    theta0 = logistic.init_params(3)
    for bs, steps_per_epoch in ((None, 1), (4, 3), (1, 10)):
        r = lossc.train(logistic, data=data, optimizer=lossc.SGD(lr=0.1), batch_size=bs,
                        epochs=2, seed=0, init=theta0)
        assert r.steps == 2 * steps_per_epoch and r.epochs == 2
    # mini-batch SGD by hand with the same shuffles: the partial batch (2 samples) counts
    r = lossc.train(logistic, data=data, optimizer=lossc.SGD(lr=0.1), batch_size=4, epochs=1,
                    seed=0, init=theta0)
    p = logistic.pack_params(theta0)
    order = np.random.default_rng(0).permutation(10)
    for lo in range(0, 10, 4):
        idx = order[lo:lo + 4]
        _, g = logistic.value_and_grad_flat(p, {"x": X[idx], "y": Y[idx]})
        p = p - 0.1 * g
    final = logistic.unpack_params(p)
    assert r.history[-1] == pytest.approx(logistic.loss(final, **data), rel=1e-12)


def test_rosenbrock_reaches_its_minimum():
    m = lossc.compile(SAMPLES / "rosenbrock.loss")
    for opt, steps in ((lossc.SGD(lr=1e-3, momentum=0.9), 20000), (lossc.Adam(lr=0.02), 20000)):
        r = lossc.train(m, optimizer=opt, steps=steps)
        np.testing.assert_allclose(r.params["p"], np.ones(5), atol=1e-3)
        assert r.steps == steps


def test_divergence_keeps_the_best_parameters(logistic, logistic_data):
    r = lossc.train(logistic, data=logistic_data, optimizer=lossc.SGD(lr=1e7), epochs=3)
    assert r.stopped == "diverged" and "smaller learning rate" in r.message
    assert "step" in r.message
    assert np.isfinite(r.best_loss)
    assert all(np.all(np.isfinite(v)) for v in r.params.values())
    assert logistic.loss(r.params, **logistic_data) == pytest.approx(r.best_loss)


def test_early_stopping_and_tolerances(logistic, logistic_data):
    r = lossc.train(logistic, data=logistic_data, optimizer=lossc.Adam(lr=0.05), epochs=200,
                    validation=0.2, patience=2, seed=0)
    assert r.stopped == "early-stop" and r.epochs < 200
    assert len(r.val_history) == r.epochs + 1
    r = lossc.train(logistic, data=logistic_data, optimizer=lossc.SGD(lr=0.5), batch_size=None,
                    epochs=5000, tol_grad=1e-3)
    assert r.stopped == "converged" and r.epochs < 5000
    _, g = logistic.value_and_grad(r.params, **logistic_data)
    assert np.sqrt(sum(np.sum(v ** 2) for v in g.values())) < 2e-3


def test_training_needs_data_and_refuses_data_for_no_input_models(logistic):
    with pytest.raises(ValueError, match="needs data"):
        lossc.train(logistic)
    seed = lossc.compile(SAMPLES / "seed.loss")
    with pytest.raises(ValueError, match="no inputs"):
        lossc.train(seed, data={"x": np.zeros(3)})

# ---------------------------------------------------------------- data files


def test_csv_headers_and_orders(tmp_path, logistic):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 8)), np.array([0, 1, 1, 0, 1])
    cols = [f"x[{j}]" for j in range(8)]
    lines = ["y," + ",".join(reversed(cols))]
    lines += [f"{Y[i]}," + ",".join(str(v) for v in X[i][::-1]) for i in range(5)]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    d = load_data(tmp_path / "a.csv", logistic)
    np.testing.assert_array_equal(d["x"], X)
    np.testing.assert_array_equal(d["y"], Y)
    # no header: declaration order
    (tmp_path / "b.csv").write_text("\n".join(",".join(map(str, list(X[i]) + [Y[i]]))
                                              for i in range(5)) + "\n")
    np.testing.assert_array_equal(load_data(tmp_path / "b.csv", logistic)["x"], X)
    np.savez(tmp_path / "c.npz", x=X, y=Y)
    np.testing.assert_array_equal(load_data(tmp_path / "c.npz", logistic)["y"], Y)


@pytest.mark.parametrize("text, words", [
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7\n1,2,3,4,5,6,7,8\n", ["no column for input 'y'"]),
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7,y,z\n1,2,3,4,5,6,7,8,1,0\n", ["'z'", "matches no input"]),
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7,y\n1,2,3,4,5,6,7,8,1\n1,2,3,nan,5,6,7,8,1\n",
     ["row 3", "'x.3'", "NaN"]),
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7,y\n1,2,3,4,5,6,7,8,1\n1,2,3,4,5,six,7,8,1\n",
     ["row 3", "'x.5'", "'six'"]),
    ("x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7,y\n1,2,3,4,5,6,7,8\n", ["row 2", "8 columns"]),
    ("1,2,3\n", ["3 columns", "header"]),
])
def test_csv_errors_name_column_and_row(tmp_path, logistic, text, words):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError) as e:
        load_data(tmp_path / "bad.csv", logistic)
    for w in words:
        assert w in str(e.value)


def test_non_integer_class_label(tmp_path):
    m = lossc.compile(SAMPLES / "softmax.loss")
    (tmp_path / "s.csv").write_text("x.0,x.1,x.2,x.3,label\n1,2,3,4,1\n1,2,3,4,1.5\n")
    with pytest.raises(DataError, match=r"row 3, column 'label': 1.5 is not an integer"):
        load_data(tmp_path / "s.csv", m)
    d = load_data(SAMPLES / "data" / "softmax.csv", m)
    assert d["label"].dtype == np.int64
    r = lossc.train(m, data=d, optimizer=lossc.Adam(lr=0.05), epochs=5)
    assert r.history[-1] < r.history[0]

# ---------------------------------------------------------------- command line


def lossc_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "lossc.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, **kw)


def test_cli_train_save_plot_and_eval(tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "params.npz", tmp_path / "loss.png"
    p = lossc_cli("train", SAMPLES / "logistic.loss", "--data", SAMPLES / "data" / "logistic.csv",
                  "--optimizer", "adam", "--lr", "0.01", "--batch-size", "64", "--epochs", "4",
                  "--seed", "0", "--hyper", "lam=0.1", "--out", out, "--plot", png)
    assert p.returncode == 0, p.stderr
    assert "epoch    4" in p.stderr and "finished" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = dict(np.load(out))
    assert saved["w"].shape == (8,)
    # the same run from Python gives the same parameters
    m = lossc.compile(SAMPLES / "logistic.loss")
    data = load_data(SAMPLES / "data" / "logistic.csv", m)
    r = lossc.train(m, data=data, optimizer=lossc.Adam(lr=0.01), batch_size=64, epochs=4,
                    seed=0, hypers={"lam": 0.1})
    np.testing.assert_array_equal(saved["w"], r.params["w"])
    p = lossc_cli("eval", SAMPLES / "logistic.loss", "--data",
                  SAMPLES / "data" / "logistic_test.csv", "--params", out, "--hyper", "lam=0.1")
    assert p.returncode == 0, p.stderr
    test = load_data(SAMPLES / "data" / "logistic_test.csv", m)
    value = float(p.stdout.split()[1])
    assert value == pytest.approx(m.loss(r.params, **test, lam=0.1), rel=1e-9)


def test_cli_train_by_steps_and_json(tmp_path):
    out = tmp_path / "p.json"
    p = lossc_cli("train", SAMPLES / "rosenbrock.loss", "--optimizer", "momentum", "--lr",
                  "1e-3", "--steps", "5000", "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert "5000 steps" in p.stdout
    np.testing.assert_allclose(json.loads(out.read_text())["p"], np.ones(5), atol=1e-2)


def test_cli_divergence_saves_best_and_fails(tmp_path):
    out = tmp_path / "p.npz"
    p = lossc_cli("train", SAMPLES / "logistic.loss", "--data", SAMPLES / "data" / "logistic.csv",
                  "--optimizer", "sgd", "--lr", "1e7", "--epochs", "3", "--out", out, "--quiet")
    assert p.returncode == 1
    assert "smaller learning rate" in p.stderr and "at step" in p.stderr
    assert np.all(np.isfinite(np.load(out)["w"]))


@pytest.mark.parametrize("args, words", [
    (["--data", "missing.csv"], ["missing.csv", "no such file"]),
    ([], ["--data"]),
    (["--data", "samples/data/softmax.csv"], ["no column for input 'x'", "'x.4'"]),
    (["--data", "samples/data/logistic.csv", "--hyper", "lam"], ["NAME=VALUE"]),
    (["--data", "samples/data/logistic.csv", "--schedule", "wiggle"], ["bad schedule"]),
])
def test_cli_train_errors(tmp_path, args, words):
    p = lossc_cli("train", SAMPLES / "logistic.loss", *args, "--out", tmp_path / "p.npz")
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in p.stderr, p.stderr
