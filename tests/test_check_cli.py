"""`lossc check` at the point the user cares about: --params, --data, --hyper."""
import json

import numpy as np
from click.testing import CliRunner

import lossc
from conftest import SAMPLES
from lossc.cli import main


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_check_at_given_parameters(tmp_path):
    """seed.loss at (x1, x2) = (3, 1): d/dx1 = 1/x1 + x2, d/dx2 = x1 - cos(x2)."""
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"x1": 3.0, "x2": 1.0}))
    code, out = run("check", SAMPLES / "seed.loss", "--params", params)
    assert code == 0, out
    assert f"{1 / 3 + 1:.12f}"[:12] in out and f"{3 - np.cos(1.0):.12f}"[:12] in out
    assert "gradient check passed" in out


def test_check_on_given_data_parameters_and_hypers(tmp_path):
    m = lossc.compile(SAMPLES / "logistic.loss")
    rng = np.random.default_rng(3)
    D = m.params[0].shape[0]
    X, Y = rng.normal(size=(40, D)), (rng.random(40) < 0.5).astype(float)
    theta = {"w": rng.normal(size=D), "b": np.array(0.7)}
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    np.savez(tmp_path / "p.npz", **theta)
    code, out = run("check", SAMPLES / "logistic.loss", "--data", tmp_path / "d.npz",
                    "--params", tmp_path / "p.npz", "--hyper", "lam=0.25", "--batch", 30)
    assert code == 0, out
    want = m.loss(theta, x=X[:30], y=Y[:30], lam=0.25)
    assert f"objective = {want:.10g}" in out
    assert "(8 checked)" in out


def test_check_reports_a_mismatch_where_the_user_looks(tmp_path):
    """relu at its kink: the compiled gradient takes relu'(0) = 0 by convention, central
    differences see 1/2. At the default point (p = 1) all is well; at p = 0, exit 1."""
    src = tmp_path / "kink.loss"
    src.write_text("param p = 1\nloss = relu(p)\n")
    code, out = run("check", src)
    assert code == 0 and "passed" in out, out
    params = tmp_path / "at0.json"
    params.write_text(json.dumps({"p": 0.0}))
    code, out = run("check", src, "--params", params)
    assert code == 1 and "MISMATCH" in out and "gradient check FAILED" in out, out


def test_check_with_a_bad_point_is_a_one_line_error(tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"w": [1.0, 2.0]}))
    code, out = run("check", SAMPLES / "logistic.loss", "--params", params)
    assert code == 1 and "lossc: error:" in out and "Traceback" not in out
    code, out = run("check", SAMPLES / "logistic.loss", "--data", tmp_path / "none.csv")
    assert code == 1 and "lossc: error:" in out


def test_check_makes_a_random_batch_for_an_int_vector_input(tmp_path):
    """The random batch gives an int vector input its (B, L) shape (it was (B,))."""
    model = tmp_path / "bag.loss"
    model.write_text("dim L = 3\ninput tok[L]: int\ninput y\nparam E[5, 2] = normal(0, 1)\n"
                     "param w[2] = 1\nloss = (dot(w, mean(E[tok], axis=0)) - y) ^ 2\n")
    code, out = run("check", model)
    assert code == 0 and "gradient check passed" in out, out
