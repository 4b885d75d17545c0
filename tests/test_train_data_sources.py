"""Where training data comes from: a pandas DataFrame as data=, a validation set of its
own (val_data=, --val-data), and what a CSV whose columns do not fit says."""
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import ROOT, SAMPLES
from lossc.cli import main
from lossc.optim import DataError, TrainConfig, load_data

DATA = SAMPLES / "data"
LOGISTIC = SAMPLES / "logistic.loss"


@pytest.fixture(scope="module")
def logistic():
    m = lossc.compile(LOGISTIC)
    return m, load_data(DATA / "logistic.csv", m)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


# ------------------------------------------------------------ DataFrame

def frame_of(data: dict):
    pd = pytest.importorskip("pandas")
    cols = {f"x.{j}": data["x"][:, j] for j in range(data["x"].shape[1])}
    return pd.DataFrame({"y": data["y"], **cols})


def test_a_data_frame_trains_as_its_arrays_do(logistic):
    m, data = logistic
    frame = frame_of(data)
    a = lossc.train(m, data=frame, epochs=2, seed=3)
    b = lossc.train(m, data=data, epochs=2, seed=3)
    for k in b.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    # column order does not matter, and bracket names are read as a CSV header's
    shuffled = frame[list(reversed(frame.columns))].rename(columns={"x.3": "x[3]"})
    c = lossc.train(m, data=shuffled, epochs=2, seed=3)
    np.testing.assert_array_equal(c.params["w"], b.params["w"])


def test_a_data_frame_is_checked_as_a_csv_is(logistic):
    m, data = logistic
    frame = frame_of(data)
    with pytest.raises(DataError, match="no column 'x.7' for input 'x'") as e:
        lossc.train(m, data=frame.drop(columns=["x.7"]), epochs=1)
    assert "found columns:" in str(e.value) and "expected columns: x.0 .. x.7, y" in str(e.value)
    bad = frame.copy()
    bad.loc[5, "x.2"] = np.nan
    with pytest.raises(DataError, match=r"data: row 5, column 'x.2' is NaN"):
        lossc.train(m, data=bad, epochs=1)
    text = frame.astype({"y": str})
    with pytest.raises(DataError, match="column 'y' must hold numbers"):
        lossc.train(m, data=text, epochs=1)
    with pytest.raises(DataError, match="no rows"):
        lossc.train(m, data=frame.iloc[:0], epochs=1)


def test_pandas_is_imported_only_for_a_data_frame():
    code = ("import sys, lossc, numpy as np\n"
            "m = lossc.compile(r'%s')\n"
            "X = np.zeros((10, 8)); y = np.zeros(10)\n"
            "lossc.train(m, data={'x': X, 'y': y}, epochs=1)\n"
            "assert 'pandas' not in sys.modules\n" % LOGISTIC)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr


# ------------------------------------------------------------ a validation set of its own

def test_val_data_is_the_validation_set(logistic):
    m, data = logistic
    train = {k: a[:3000] for k, a in data.items()}
    held = {k: a[3000:] for k, a in data.items()}      # the last thousand: a time split
    r = lossc.train(m, data=train, val_data=held, epochs=3, seed=0)
    assert len(r.val_history) == 4
    assert r.val_history[-1] == pytest.approx(m.loss(r.last_params, **held), rel=1e-12)
    assert r.best_loss == min(r.val_history)
    assert r.samples == 3 * 3000           # every training sample, none of the held-out
    # a file, and a DataFrame, are validation sets too
    r2 = lossc.train(m, data=train, val_data=DATA / "logistic_test.csv", epochs=1)
    test = load_data(DATA / "logistic_test.csv", m)
    assert r2.val_history[-1] == pytest.approx(m.loss(r2.last_params, **test), rel=1e-12)
    plan = TrainConfig(val_data=held).plan(m, 3000, n_val=1000)
    assert (plan.n_train, plan.n_val, plan.patience) == (3000, 1000, 5)


def test_val_data_mistakes(logistic):
    m, data = logistic
    with pytest.raises(ValueError, match="validation= and val_data= are exclusive"):
        lossc.train(m, data=data, validation=0.2, val_data=data)
    # a dict where the fraction goes says where a validation set goes
    with pytest.raises(TypeError, match="pass a validation set of its own as val_data="):
        lossc.train(m, data=data, validation={"x": data["x"], "y": data["y"]})
    with pytest.raises(DataError, match="val_data: input 'x' must have shape"):
        lossc.train(m, data=data, val_data={"x": data["x"][:, :3], "y": data["y"]})
    bad = {"x": data["x"][:10].copy(), "y": data["y"][:10]}
    bad["x"][4, 1] = np.inf
    with pytest.raises(DataError, match="val_data: sample 4, column 'x.1' is inf"):
        lossc.train(m, data=data, val_data=bad)
    with pytest.raises(TypeError, match="val_data must be a dict of arrays"):
        lossc.train(m, data=data, val_data=[1, 2])
    # (NumPy's own error named no input)
    ragged = {"x": data["x"][:3].tolist(), "y": [0, [1, 0], 1]}
    with pytest.raises(DataError, match="val_data: input 'y' must be an array, got a ragged"):
        lossc.train(m, data=data, val_data=ragged)
    rosen = lossc.compile(SAMPLES / "rosenbrock.loss")
    with pytest.raises(ValueError, match="no data to validate on"):
        lossc.train(rosen, val_data=data, steps=2)


def test_val_data_on_the_command_line(tmp_path, logistic):
    m, _ = logistic
    out = tmp_path / "p.npz"
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--val-data",
            DATA / "logistic_test.csv", "--epochs", "2", "--out", out)
    assert r.exit_code == 0, r.output
    assert "4000 samples (+1000 for validation)" in r.output and "on validation" in r.output
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--val-data",
            DATA / "logistic_test.csv", "--validation", "0.2", "--out", out)
    assert r.exit_code == 1 and "exclusive" in r.output
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--val-data",
            DATA / "softmax.csv", "--out", out)
    assert r.exit_code == 1 and "softmax.csv: no column" in r.output
    val = tmp_path / "val.npz"
    np.savez(val, **load_data(DATA / "logistic_test.csv", m))
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--val-data", val,
            "--out", val)
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    assert set(np.load(val)) == {"x", "y"}


# ------------------------------------------------------------ CSV columns that do not fit

def test_a_csv_whose_columns_do_not_fit_lists_found_and_expected(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x.0,x.1,x.2,x.3,label\n1,2,3,4,0\n")
    r = run("train", LOGISTIC, "--data", path, "--out", tmp_path / "p.npz")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"lossc: error: {path}: no column 'x.4' for input 'x' (one column per element: "
        "x.4, ...); found columns: x.0, x.1, x.2, x.3, label; expected columns: "
        "x.0 .. x.7, y"]
    path.write_text(",".join([f"x.{j}" for j in range(8)] + ["y", "z"]) + "\n" +
                    ",".join(["1"] * 10) + "\n")
    r = run("train", LOGISTIC, "--data", path, "--out", tmp_path / "p.npz")
    assert r.exit_code == 1 and "column 'z' matches no input" in r.output
    assert "found columns: x.0, x.1, x.2, x.3, x.4, x.5, x.6, x.7, y, z;" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_matrix_input_s_expected_columns_run_from_its_first_element(tmp_path):
    src = tmp_path / "m.loss"
    src.write_text("input M[2, 2]\nparam w[2, 2]\nloss = sum(w * M)\n")
    path = tmp_path / "d.csv"
    path.write_text("M.0.0,M.0.1,M.1.0,M.1.1,z\n1,2,3,4,5\n")
    r = run("train", src, "--data", path, "--out", tmp_path / "p.npz")
    assert r.exit_code == 1 and "column 'z' matches no input" in r.output
    assert r.output.strip().endswith("expected columns: M.0.0 .. M.1.1"), r.output


def test_a_long_header_is_listed_in_part(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(",".join(f"c{j}" for j in range(100)) + "\n" + ",".join(["1"] * 100)
                    + "\n")
    with pytest.raises(DataError) as e:
        load_data(path, lossc.compile(LOGISTIC))
    assert "found columns: c0, c1," in str(e.value) and "c19, ... (100 in all)" in str(e.value)


# ------------------------------------------------------------ files without rows

def test_a_data_file_without_rows_has_no_samples(tmp_path, logistic):
    """As a dict of empty arrays and a CSV with a header only: a .npz or .npy of 0 rows
    gave NumPy's "cannot reshape array of size 0 into shape (0,newaxis)"."""
    m, _ = logistic
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 8)), y=np.zeros(0))
    with pytest.raises(DataError, match="data: no samples"):
        lossc.train(m, data={"x": np.zeros((0, 8)), "y": np.zeros(0)})
    with pytest.raises(DataError, match=f"^{empty}: no samples$"):
        lossc.train(m, data=empty)
    source = tmp_path / "m.loss"                # (predict needs an output)
    source.write_text(LOGISTIC.read_text() + "output p = sigmoid(z)\n")
    params = lossc.save_params(tmp_path / "p.npz", m.init_params())
    for command in (["train", source, "--data", empty, "--out", tmp_path / "q.npz"],
                    ["eval", source, "--data", empty, "--params", params],
                    ["predict", source, "--data", empty, "--params", params,
                     "--out", tmp_path / "pred.npz"]):
        r = run(*command)
        assert r.exit_code == 1 and r.output == f"lossc: error: {empty}: no samples\n", \
            r.output
    assert sorted(f.name for f in tmp_path.iterdir()) == ["empty.npz", "m.loss", "p.npz"]


def test_an_npy_file_without_rows_for_an_int_input_has_no_samples(tmp_path):
    m = lossc.compile("input t[2]: int\nparam v[3]\nloss = sum(v[t])\n")
    empty = tmp_path / "t.npy"
    np.save(empty, np.zeros((0, 2)))          # (floats: checked as whole numbers)
    with pytest.raises(DataError, match=f"^{empty}: no samples$"):
        load_data(empty, m)
