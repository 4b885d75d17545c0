"""Outputs (`output name = expr`) and predictions: `m.outputs`, `m.predict` natively
(only the inputs the outputs need; a boolean as 0/1; no batch axis in a model without
inputs) against the reference interpreter, and `lossc predict`."""
import os

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import assert_compile_error
from lossc.cli import main
from lossc.compiler import compile_source
from lossc.ir.evaluate import evaluate_batch

SOURCE = """dim D = 4
dim K = 3
input x[D]
input g
input label: int
param W[K, D]
param c[K]
hyper temp = 1
hyper shift[K] = [0.5, 0, -0.5]
z = (W @ x + c) / temp + shift
p = softmax(z)
loss = logsumexp(z) - z[label]
output prob = p
output top = max(z)
output first = z[0] >= max(z)
output gz = g * outer(p, p)
output bias = sum(c) + temp
"""


def _theta(m, seed=0):
    rng = np.random.default_rng(seed)
    return {p.name: rng.normal(size=p.shape) for p in m.params}


def _reference(src, theta, data, hypers=None, dtype=np.float64):
    graph = compile_source(src).stages["build"]
    keys = [k for k in graph.outputs if k.startswith("out.")]
    got = evaluate_batch(graph, theta, data, hypers, keys)
    return {k[4:]: np.asarray(v, dtype=dtype) for k, v in got.items()}


def test_the_outputs_are_described():
    m = lossc.compile(SOURCE)
    assert [(o.name, o.shape, o.inputs) for o in m.outputs] == [
        ("prob", (3,), ("x",)), ("top", (), ("x",)), ("first", (), ("x",)),
        ("gz", (3, 3), ("x", "g")), ("bias", (), ())]


@pytest.mark.parametrize("B", [1, 5, 8, 19, 40])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_agrees_with_the_reference_interpreter(B, dtype):
    m = lossc.compile(SOURCE, dtype=dtype)
    theta = _theta(m)
    rng = np.random.default_rng(B)
    data = {"x": rng.normal(size=(B, 4)), "g": rng.normal(size=B)}
    pred = m.predict(theta, **data, temp=0.7)
    want = _reference(SOURCE, theta, data, {"temp": 0.7})
    assert list(pred) == ["prob", "top", "first", "gz", "bias"]
    tol = 1e-13 if dtype == "float64" else 1e-5
    for k, ref in want.items():
        assert pred[k].dtype == np.dtype(dtype) and pred[k].shape == ref.shape, k
        np.testing.assert_allclose(pred[k], ref, rtol=tol, atol=tol, err_msg=k)
    assert set(np.unique(pred["first"])) <= {0.0, 1.0}
    # the labels the loss alone uses may be given too; they change nothing
    again = m.predict(theta, **data, label=np.zeros(B, int), temp=0.7)
    for k in pred:
        np.testing.assert_array_equal(again[k], pred[k])


def test_outputs_change_nothing_in_the_objective():
    without = SOURCE.split("output prob")[0]
    m = lossc.compile(SOURCE)
    with pytest.warns(lossc.LosscWarning, match="never used"):
        m0 = lossc.compile(without)
    theta = _theta(m)
    data = {"x": np.ones((3, 4)), "g": np.ones(3), "label": np.array([0, 2, 1])}
    v, g = m.value_and_grad(theta, **data)
    v0, g0 = m0.value_and_grad(theta, **data)
    assert v == v0 and all(np.array_equal(g[k], g0[k]) for k in g)
    assert not any("never used" in w for w in m.warnings)      # (g: by an output)
    assert any("'g' is declared but never used" in w for w in m0.warnings)


def test_a_model_without_inputs_predicts_once():
    with pytest.warns(lossc.LosscWarning, match="'v' does not affect the loss"):
        m = lossc.compile("param a = 2\nparam v[2] = 1\nloss = a ^ 2\n"
                          "output sq = a ^ 2\noutput both = [a, sum(v)]\n"
                          "output big = a > 1\n")
    pred = m.predict({"a": 3.0, "v": np.array([1.0, 2.0])})
    assert pred["sq"].shape == () and pred["sq"] == 9.0
    np.testing.assert_array_equal(pred["both"], [3.0, 3.0])
    assert pred["big"] == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"g": np.ones(2)}, r"missing input 'x' \(B, 4\)"),
    ({"x": np.ones((2, 4))}, r"missing input 'g'"),
    ({}, r"missing input"),
    ({"x": np.ones((2, 4)), "g": np.ones(2), "nope": 1}, r"unknown argument 'nope'"),
    ({"x": np.ones((2, 3)), "g": np.ones(2)}, r"input 'x' must have shape \(B, 4\)"),
    ({"x": np.ones((2, 4)), "g": np.ones(3)}, r"batch sizes disagree"),
    ({"x": np.ones((2, 4)), "g": np.ones(2), "shift": 1.0}, r"hyperparameter 'shift'"),
])
def test_predict_argument_errors(kwargs, match):
    m = lossc.compile(SOURCE)
    with pytest.raises(ValueError, match=match):
        m.predict(_theta(m), **kwargs)


def test_an_output_needing_no_input_still_needs_the_batch_size():
    m = lossc.compile("input x\nparam w\nloss = (w - x) ^ 2\noutput ww = 2 * w\n")
    with pytest.raises(ValueError, match="at least one input"):
        m.predict({"w": 1.0})
    np.testing.assert_array_equal(m.predict({"w": 1.5}, x=np.zeros(3))["ww"], [3.0] * 3)


def test_predict_checks_indices():
    m = lossc.compile("dim L = 2\ninput t[L]: int\nparam v[3]\nloss = sum(v[t])\n"
                      "output picked = v[t]\n")
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(m.predict({"v": v}, t=np.array([[2, 0], [1, 1]]))["picked"],
                                  [[3, 1], [2, 2]])
    with pytest.raises(ValueError, match="index t = 3 is out of range 0..2 at sample 1"):
        m.predict({"v": v}, t=np.array([[2, 0], [1, 3]]))


def test_a_saved_model_predicts(tmp_path):
    m = lossc.compile(SOURCE)
    path = tmp_path / "m.lossc"
    m.save(path)
    m2 = lossc.load(path)
    theta = _theta(m)
    data = {"x": np.ones((3, 4)), "g": np.arange(3.0)}
    a, b = m.predict(theta, **data), m2.predict(theta, **data)
    assert m2.outputs == m.outputs and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("source, line, col, words", [
    ("param w\nloss = w\noutput twice = loss * 2\n", 3, 16, ["loss"]),
    ("param w\nloss = w\noutput w = 2\n", 3, 8, ["already defined"]),
    ("param w\nloss = w\noutput a = 1\noutput a = 2\n", 4, 8, ["already defined"]),
    ("param w\nloss = w\noutput exp = 1\n", 3, 8, ["built-in"]),
    ("param w\nloss = w\noutput = 1\n", 3, 1, ["reserved"]),
])
def test_output_errors(source, line, col, words):
    assert_compile_error(source, line, col, words)


# ---------------------------------------------------------------- lossc predict


@pytest.fixture
def trained(tmp_path):
    model_path = tmp_path / "m.loss"
    model_path.write_text(SOURCE)
    m = lossc.compile(SOURCE)
    theta = _theta(m, 3)
    np.savez(tmp_path / "p.npz", **theta)
    rng = np.random.default_rng(4)
    data = {"x": rng.normal(size=(6, 4)), "g": rng.normal(size=6)}
    with open(tmp_path / "test.csv", "w") as f:
        f.write(",".join([f"x.{i}" for i in range(4)] + ["g", "label"]) + "\n")
        for r, g in zip(data["x"], data["g"]):
            f.write(",".join(repr(float(v)) for v in list(r) + [g, 1]) + "\n")
    return tmp_path, m, theta, data


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_writes_a_csv_named_as_inputs_are(trained):
    d, m, theta, data = trained
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.csv",
            "--out", d / "pred.csv")
    assert r.exit_code == 0, r.output
    lines = (d / "pred.csv").read_text().splitlines()
    assert lines[0].split(",") == (["prob.0", "prob.1", "prob.2", "top", "first"]
                                   + [f"gz.{i}.{j}" for i in range(3) for j in range(3)]
                                   + ["bias"])
    table = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])
    want = m.predict(theta, **data)
    np.testing.assert_allclose(table[:, :3], want["prob"], rtol=1e-15)
    np.testing.assert_allclose(table[:, 5:14], want["gz"].reshape(6, 9), rtol=1e-15)
    np.testing.assert_allclose(table[:, 14], want["bias"], rtol=1e-15)


@pytest.mark.parametrize("cell, words", [("nan", "row 3, column 'x.1' is NaN"),
                                         ("abc", "row 3, column 'x.1'")])
def test_cli_reports_a_bad_cell_of_a_file_with_every_input(trained, cell, words):
    """The error of a file holding every input is its own: it was replaced by the
    retry with only the inputs the outputs need ("column 'label' matches no input")."""
    d = trained[0]
    lines = (d / "test.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = cell
    lines[2] = ",".join(cells)
    (d / "bad.csv").write_text("\n".join(lines) + "\n")
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "bad.csv",
            "--out", d / "pred.csv")
    assert r.exit_code != 0 and words in r.output, r.output
    assert "matches no input" not in r.output and not (d / "pred.csv").exists()


@pytest.mark.parametrize("header", [True, False])
def test_cli_reads_no_cell_of_an_input_the_outputs_do_not_use(trained, header):
    """A test set's labels may be blank, NaN or anything: the outputs do not use them.
    They were refused ("row 2, column 'label' is empty (a missing value)")."""
    d, m, theta, data = trained
    lines = (d / "test.csv").read_text().splitlines()
    labels = ["nan", "", "?", "1.5", "inf", ""]     # (a first row of numbers: data)
    rows = [",".join(ln.split(",")[:-1] + [label]) for ln, label in zip(lines[1:], labels)]
    (d / "unlabelled.csv").write_text("\n".join(lines[:1] * header + rows) + "\n")
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "unlabelled.csv",
            "--out", d / "pred.npz")
    assert r.exit_code == 0, r.output
    got, want = np.load(d / "pred.npz"), m.predict(theta, **data)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # the cells of the inputs the outputs use are checked as before
    bad = rows[:2] + [rows[2].replace(rows[2].split(",")[4], "nan", 1)] + rows[3:]
    (d / "bad.csv").write_text("\n".join(lines[:1] * header + bad) + "\n")
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "bad.csv",
            "--out", d / "pred.npz")
    column = "g" if header else "#5"
    assert r.exit_code == 1 and f"row {3 + header}, column '{column}' is NaN" in r.output, \
        r.output


def test_cli_reads_no_array_of_an_input_the_outputs_do_not_use(trained):
    d, m, theta, data = trained
    np.savez(d / "test.npz", **data, label=np.array([np.nan, 0.5, -1, 2, 0, 1]))
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.npz",
            "--out", d / "pred.npz")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(d / "pred.npz")["gz"],
                                  m.predict(theta, **data)["gz"])


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_cli_takes_data_holding_some_inputs_the_outputs_do_not_use(tmp_path, suffix):
    """A file with the inputs the outputs need and some, not all, of the others: its
    other columns were refused ("column 'k' matches no input of the model")."""
    (tmp_path / "m.loss").write_text(
        "dim D = 2\ninput x[D]\ninput y\ninput k: int\nparam w[D] = 1\n"
        "output pred = dot(w, x)\nloss = (dot(w, x) - y) ^ 2 + k\n")
    np.savez(tmp_path / "p.npz", w=np.array([1.0, -2.0]))
    x, k = np.array([[1.0, 2.0], [3.0, 4.5], [0.25, -1.0]]), np.array([3, 5, 7])
    data = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        data.write_text("k,x.1,x.0\n" + "".join(f"{kk},{float(r[1])!r},{float(r[0])!r}\n"
                                                for kk, r in zip(k, x)))
    else:
        np.savez(data, x=x, k=k)
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz", "--data", data,
            "--out", tmp_path / "pred.npz")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npz")["pred"], x @ [1.0, -2.0])


def test_cli_writes_npz_from_npz_data_without_labels(trained):
    d, m, theta, data = trained
    np.savez(d / "test.npz", **data)
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.npz",
            "--out", d / "pred.npz", "--hyper", "temp=2")
    assert r.exit_code == 0, r.output
    got = np.load(d / "pred.npz")
    want = m.predict(theta, **data, temp=2.0)
    assert set(got.files) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("out, words", [
    ("test.csv", "refusing to overwrite"), ("p.npz", "refusing to overwrite"),
    ("pred.txt", "must end in .csv, .npz or .npy"), ("pred.npy", "holds one array"),
])
def test_cli_errors_are_one_line(trained, out, words):
    d, *_ = trained
    before = (d / "test.csv").read_bytes(), (d / "p.npz").read_bytes()
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.csv",
            "--out", d / out)
    assert r.exit_code == 1 and words in r.output and len(r.output.strip().splitlines()) == 1
    assert ((d / "test.csv").read_bytes(), (d / "p.npz").read_bytes()) == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_cli_reports_a_failed_write_in_one_line(trained):
    """A write that fails (/dev/full: no space left on the device) was a traceback."""
    d, *_ = trained
    (d / "full.csv").symlink_to("/dev/full")
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.csv",
            "--out", d / "full.csv")
    assert r.exit_code == 1 and not isinstance(r.exception, OSError), r.exception
    assert r.output == f"lossc: error: cannot write {d / 'full.csv'}: No space left on device\n"


def test_cli_refuses_a_model_without_outputs_and_data_missing_a_needed_input(trained):
    d, *_ = trained
    (d / "plain.loss").write_text(SOURCE.split("output prob")[0])
    r = run("predict", d / "plain.loss", "--params", d / "p.npz", "--data", d / "test.csv",
            "--out", d / "pred.csv")
    assert r.exit_code == 1 and "declares no outputs" in r.output
    np.savez(d / "only_x.npz", x=np.ones((2, 4)))
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "only_x.npz",
            "--out", d / "pred.csv")
    assert r.exit_code == 1 and "'g'" in r.output and not (d / "pred.csv").exists()


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_cli_names_the_needed_input_a_file_lacks(tmp_path, suffix):
    """A .npz holding the label but not the input the outputs need said "'y' is not an
    input of the model (inputs: x)"."""
    (tmp_path / "m.loss").write_text(
        "input x\ninput y\nparam w = 1\nloss = (w * x - y) ^ 2\noutput p = w * x\n")
    np.savez(tmp_path / "p.npz", w=np.array(2.0))
    data = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        data.write_text("y\n1\n2\n")
    else:
        np.savez(data, y=np.ones(3))
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz", "--data", data,
            "--out", tmp_path / "pred.csv")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "'x'" in r.output and "not an input" not in r.output, r.output
    assert not (tmp_path / "pred.csv").exists()


def test_compile_lists_the_outputs(trained):
    d, *_ = trained
    r = run("compile", d / "m.loss", "-o", d / "m.lossc")
    assert r.exit_code == 0 and "  outputs: prob[3], top, first, gz[3, 3], bias" in r.output, \
        r.output


# ------------------------------------------- lossc predict with the parameters file's record

@pytest.fixture
def recorded(tmp_path):
    """SOURCE compiled with D=5 in float32 (its file says D=4, float64), parameters
    saved with their record and temp=2 (its file says 1)."""
    (tmp_path / "m.loss").write_text(SOURCE)
    m = lossc.compile(SOURCE, dims={"D": 5}, dtype="float32")
    theta = {k: v.astype(np.float32) for k, v in _theta(m, 5).items()}
    lossc.save_params(tmp_path / "p.npz", theta, model=m, hypers={"temp": 2.0})
    data = {"x": np.random.default_rng(6).normal(size=(7, 5)), "g": np.arange(7.0)}
    np.savez(tmp_path / "test.npz", **data)
    return tmp_path, m, theta, data


def test_cli_predicts_with_the_recorded_dims_dtype_and_hypers(recorded):
    d, m, theta, data = recorded
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.npz",
            "--out", d / "pred.npz")
    assert r.exit_code == 0, r.output
    assert "using D=5, K=3, float32, temp=2, shift=[...] as" in r.output
    got, want = np.load(d / "pred.npz"), m.predict(theta, **data, temp=2.0)
    for k in want:
        assert got[k].dtype == np.float32, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # (temp matters: at the file's default the predictions differ)
    assert not np.allclose(got["prob"], m.predict(theta, **data)["prob"])


def test_cli_predict_hyper_overrides_the_record(recorded):
    d, m, theta, data = recorded
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.npz",
            "--out", d / "pred.npz", "--hyper", "temp=0.5")
    assert r.exit_code == 0, r.output
    assert "temp=" not in r.output and "using D=5, K=3, float32, shift=[...] as" in r.output
    want = m.predict(theta, **data, temp=0.5)
    np.testing.assert_array_equal(np.load(d / "pred.npz")["prob"], want["prob"])


@pytest.mark.parametrize("args, words", [
    (["--dim", "D=4"], "trained with D=5, K=3, float32; the model here has D=4, K=3, float32"),
    (["--dtype", "float64"],
     "trained with D=5, K=3, float32; the model here has D=5, K=3, float64"),
])
def test_cli_predict_refuses_other_dims_or_dtype_in_one_line(recorded, args, words):
    d, *_ = recorded
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.npz",
            "--out", d / "pred.npz", *args)
    assert r.exit_code == 1 and words in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (d / "pred.npz").exists()


def test_cli_predict_takes_a_file_without_a_record_as_it_is(trained):
    d, m, theta, data = trained                      # (p.npz: np.savez, no record)
    np.savez(d / "test.npz", **data)
    r = run("predict", d / "m.loss", "--params", d / "p.npz", "--data", d / "test.npz",
            "--out", d / "pred.npz")
    assert r.exit_code == 0 and "using" not in r.output, r.output
    np.testing.assert_array_equal(np.load(d / "pred.npz")["prob"],
                                  m.predict(theta, **data)["prob"])


def test_cli_writes_npz_outputs_named_as_numpy_savez_arguments(tmp_path):
    """np.savez takes the names as keyword arguments: an output 'file' clashed with its
    first one (a traceback) and 'allow_pickle' was taken as that option (not saved)."""
    (tmp_path / "m.loss").write_text(
        "input x\nparam w\nloss = (w - x) ^ 2\noutput file = w * x\n"
        "output allow_pickle = w + x\noutput args = [x, w]\noutput kwds = x > w\n")
    lossc.save_params(tmp_path / "p.npz", {"w": 2.0})
    np.save(tmp_path / "x.npy", np.array([1.0, 3.0]))
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz",
            "--data", tmp_path / "x.npy", "--out", tmp_path / "pred.npz")
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "pred.npz")
    assert sorted(got.files) == ["allow_pickle", "args", "file", "kwds"]
    np.testing.assert_array_equal(got["file"], [2.0, 6.0])
    np.testing.assert_array_equal(got["allow_pickle"], [3.0, 5.0])
    np.testing.assert_array_equal(got["args"], [[1.0, 2.0], [3.0, 2.0]])
    np.testing.assert_array_equal(got["kwds"], [0.0, 1.0])


@pytest.mark.parametrize("dtype, x, written", [
    ("float64", [0.1, -0.0, 2.2250738585072014e-308, 1e16, 1.25e-05, 123456789.0, 1.0,
                 1e300, -1.5, 2.0 ** 53 + 2],
     ["0.1", "-0.0", "2.2250738585072014e-308", "1e+16", "1.25e-05", "123456789.0", "1.0",
      "1e+300", "-1.5", "9007199254740994.0"]),
    # a float32 prediction is written as the float64 of the same value
    ("float32", [0.1, -0.0, 1e16, 1.25e-05, 123456789.0, 1.0, 3e38, -1.5, 2.0 ** 53 + 2],
     ["0.10000000149011612", "-0.0", "1.0000000272564224e+16", "1.249999968422344e-05",
      "123456792.0", "1.0", "3.0000000054977558e+38", "-1.5", "9007199254740992.0"]),
])
def test_cli_csv_values_are_the_shortest_text_that_reads_back(tmp_path, dtype, x, written):
    """Each value as Python's repr writes a float: the fewest digits that read back as
    the same float64 (docs/language.md)."""
    source = "input x\nparam w\nloss = (w - x) ^ 2\noutput same = w * x\n"
    (tmp_path / "m.loss").write_text(source)
    m = lossc.compile(source, dtype=dtype)
    lossc.save_params(tmp_path / "p.json", {"w": 1.0}, model=m)
    np.save(tmp_path / "x.npy", np.array(x))
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.json",
            "--data", tmp_path / "x.npy", "--out", tmp_path / "pred.csv")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pred.csv").read_text().splitlines() == ["same"] + written



def test_a_model_without_inputs_predicts_arrays():
    """A scalar output came back as a NumPy scalar (np.float64), a vector one as an
    array: predict returns one array per output."""
    m = lossc.compile("param a = 2\nloss = a ^ 2\noutput o = a * 3\noutput v = [a, 2 * a]\n",
                      cache=False)
    out = m.predict({"a": 2.0})
    assert type(out["o"]) is np.ndarray and out["o"].shape == () and out["o"] == 6.0
    assert type(out["v"]) is np.ndarray and out["v"].tolist() == [2.0, 4.0]


@pytest.mark.parametrize("data", ["y.csv", "y.npz", "y.npy", "xy_blank.csv", "x.npy",
                                  "x_blank.csv"])
def test_cli_takes_any_one_input_where_the_outputs_use_none(tmp_path, data):
    """Outputs of parameters alone: a file with one of the inputs was refused with
    "give any one of them for the batch size", and so was one with every input whose
    labels were blank."""
    (tmp_path / "m.loss").write_text(
        "dim D = 2\ninput x[D]\ninput y\nparam w[D] = 1\nparam c = 0.5\n"
        "loss = (dot(w, x) - y) ^ 2\noutput k = c + 1\noutput kv = w * 2\n")
    np.savez(tmp_path / "p.npz", w=np.array([1.0, -2.0]), c=np.array(0.5))
    (tmp_path / "y.csv").write_text("y\n1\n2\n3\n")
    np.savez(tmp_path / "y.npz", y=np.ones(3))
    np.save(tmp_path / "y.npy", np.ones(3))
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    (tmp_path / "xy_blank.csv").write_text("x.0,x.1,y\n1,2,\n3,4,\n5,6,\n")
    (tmp_path / "x_blank.csv").write_text("x.0,x.1,y\n,,1\n,,2\n,,3\n")
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz",
            "--data", tmp_path / data, "--out", tmp_path / "pred.npz")
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "pred.npz")
    np.testing.assert_array_equal(got["k"], [1.5] * 3)
    np.testing.assert_array_equal(got["kv"], [[2.0, -4.0]] * 3)


def test_cli_predict_and_eval_say_to_omit_data_for_a_model_without_inputs(tmp_path):
    """The message said to train the model by steps."""
    (tmp_path / "m.loss").write_text("param a = 2\nloss = a ^ 2\noutput o = a * 3\n")
    np.savez(tmp_path / "p.npz", a=np.array(2.0))
    (tmp_path / "d.csv").write_text("z\n1\n")
    for command in (["predict", "--out", tmp_path / "o.csv"], ["eval"]):
        r = run(command[0], tmp_path / "m.loss", "--params", tmp_path / "p.npz",
                "--data", tmp_path / "d.csv", *command[1:])
        assert r.exit_code == 1 and r.output.strip().splitlines()[-1] == (
            f"lossc: error: {tmp_path / 'm.loss'} has no inputs, so it takes no data: "
            "omit --data"), r.output


@pytest.mark.parametrize("layout", ["x.npy", "x.npz", "chunks"])
def test_cli_predict_refuses_data_beyond_a_float32_models_range(tmp_path, layout):
    """A file of the inputs the outputs use alone (.npy) and chunks were read without
    the float32 range check: 1e39 became an infinite prediction, exit status 0."""
    (tmp_path / "m.loss").write_text(
        "dim D = 2\ninput x[D]\ninput y\nparam w[D] = 1\n"
        "loss = (dot(w, x) - y) ^ 2\noutput p = dot(w, x)\n")
    m = lossc.compile((tmp_path / "m.loss").read_text(), dtype="float32", cache=False)
    lossc.save_params(tmp_path / "p.npz", {"w": np.ones(2, np.float32)}, model=m)
    x = np.ones((4, 2))
    x[2, 1] = 1e39
    if layout == "x.npy":
        np.save(tmp_path / "x.npy", x)
    elif layout == "x.npz":
        np.savez(tmp_path / "x.npz", x=x)
    else:
        for name, a in (("x", x), ("y", np.ones(4))):
            (tmp_path / "chunks" / name).mkdir(parents=True)
            np.save(tmp_path / "chunks" / name / "0.npy", a)
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz",
            "--data", tmp_path / layout, "--out", tmp_path / "pred.npz")
    assert r.exit_code == 1 and "1e+39, beyond float32's range" in r.output, r.output
    assert not (tmp_path / "pred.npz").exists()


def test_an_input_beyond_a_float32_models_range_is_a_value_error():
    """float64 data of 1e39 became an infinity in a float32 model's calls, with NumPy's
    overflow warning at most; an infinity given stays one."""
    m = lossc.compile("dim D = 3\ninput x[D]\nparam w[D]\nloss = sum(w * x)\n"
                      "output o = dot(w, x)\n", dtype="float32", cache=False)
    x = np.ones((5, 3))
    x[3, 1] = -1e39
    theta = {"w": np.ones(3)}
    for call in (m.loss, m.value_and_grad, m.predict):
        with pytest.raises(ValueError, match=r"input 'x' holds -1e\+39 at sample 3, beyond "
                                             r"float32's range"):
            call(theta, x=x)
    x[3, 1] = -np.inf
    assert m.loss(theta, x=x) == -np.inf


def test_cli_refuses_a_csv_with_a_quote_left_open(tmp_path):
    """A label cell that opens a quote took the rest of the file into itself: predict,
    which does not read the labels, wrote predictions for the rows before it alone."""
    (tmp_path / "m.loss").write_text(
        "input x\ninput y\nparam w = 2\nloss = (w * x - y) ^ 2\noutput p = w * x\n")
    np.savez(tmp_path / "p.npz", w=np.array(2.0))
    (tmp_path / "d.csv").write_text('x,y\n1,0\n2,"1\n3,0\n4,1\n')
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz",
            "--data", tmp_path / "d.csv", "--out", tmp_path / "pred.csv")
    assert r.exit_code == 1 and "line 3: a quoted cell runs over several lines" in r.output, r.output
    assert not (tmp_path / "pred.csv").exists()
    # a closing quote and spaces before the comma are read as before
    (tmp_path / "spaced.csv").write_text('"x" ,y\n"1" ,0\n2,1\n')
    r = run("predict", tmp_path / "m.loss", "--params", tmp_path / "p.npz",
            "--data", tmp_path / "spaced.csv", "--out", tmp_path / "pred.csv")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pred.csv").read_text().splitlines() == ["p", "2.0", "4.0"]
