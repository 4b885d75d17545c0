"""A parameters file records what it was trained with (dims, dtype, hypers, the
source's hash), and `lossc eval` uses the record (`--hyper` overrides its hypers)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import SAMPLES
from lossc.cli import main
from lossc.optim import load_data, load_params, trained_with
from lossc import save_params

DATA = SAMPLES / "data"
LOGISTIC = SAMPLES / "logistic.loss"
TEST = DATA / "logistic_test.csv"


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """logistic.loss trained with lam=0.1 (its file says 1e-3), saved by lossc train."""
    out = tmp_path_factory.mktemp("trained") / "p.npz"
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--epochs", "2",
            "--hyper", "lam=0.1", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    return out


def objective(output: str) -> float:
    line = next(ln for ln in output.splitlines() if ln.startswith("objective"))
    return float(line.split()[1])


def test_eval_uses_the_hypers_the_parameters_were_trained_with(trained):
    m = lossc.compile(LOGISTIC)
    params, test = load_params(trained, m), load_data(TEST, m)
    r = run("eval", LOGISTIC, "--data", TEST, "--params", trained)
    assert r.exit_code == 0, r.output
    assert objective(r.output) == pytest.approx(m.loss(params, **test, lam=0.1), rel=1e-9)
    assert objective(r.output) != pytest.approx(m.loss(params, **test), rel=1e-3)
    assert "using D=8, float64, lam=0.1 as" in r.output
    # --hyper overrides the record
    r = run("eval", LOGISTIC, "--data", TEST, "--params", trained, "--hyper", "lam=0.001")
    assert objective(r.output) == pytest.approx(m.loss(params, **test, lam=0.001), rel=1e-9)
    assert "lam=" not in r.output.splitlines()[0]


def test_the_record(trained):
    rec = trained_with(trained)
    assert rec.name == "logistic.loss" and rec.dims == {"D": 8} and rec.dtype == "float64"
    assert rec.hypers == {"lam": 0.1}
    assert rec.source_sha256 == lossc.compile(LOGISTIC).meta["source_sha256"]
    assert set(np.load(trained)) == {"w", "b", "__lossc__"}
    assert set(load_params(trained)) == {"w", "b"}


@pytest.mark.parametrize("args, words", [
    (["--dim", "D=4"], "trained with D=8, float64; the model here has D=4, float64"),
    (["--dtype", "float32"], "trained with D=8, float64; the model here has D=8, float32"),
])
def test_a_mismatch_of_dims_or_dtype_is_one_line_naming_both(trained, args, words):
    r = run("eval", LOGISTIC, "--data", TEST, "--params", trained, *args)
    assert r.exit_code == 1
    assert words in r.output and len(r.output.strip().splitlines()) == 1


def test_the_line_on_stderr_and_the_help_say_what_may_be_overridden(trained):
    r = run("eval", LOGISTIC, "--data", TEST, "--params", trained)
    assert ("as " + str(trained) + " records (trained with them; --hyper can override a "
            "hyperparameter, not a dim or the dtype)") in r.output
    for cmd in ("eval", "predict"):
        text = " ".join(run(cmd, "--help").output.split())
        # a float32 record is evaluated in float32 when --dtype is left out
        assert "[default: float64]" not in text
        assert "(default: the parameters file's record, else float64;" in text


def test_eval_compiles_with_the_recorded_dims_and_dtype(tmp_path):
    m = lossc.compile(LOGISTIC, dims={"D": 3}, dtype="float32")
    X = np.random.default_rng(0).normal(size=(50, 3))
    y = (X[:, 0] > 0).astype(float)
    np.savez(tmp_path / "d.npz", x=X, y=y)
    params = m.init_params(1)
    out = save_params(tmp_path / "p.npz", params, model=m, hypers={"lam": 0.5})
    r = run("eval", LOGISTIC, "--data", tmp_path / "d.npz", "--params", out)
    assert r.exit_code == 0, r.output
    assert "using D=3, float32, lam=0.5" in r.output
    assert objective(r.output) == pytest.approx(m.loss(params, x=X, y=y, lam=0.5), rel=1e-6)


def test_a_changed_source_is_a_warning(tmp_path, trained):
    src = tmp_path / "logistic.loss"
    src.write_text(LOGISTIC.read_text() + "# edited\n")
    r = run("eval", src, "--data", TEST, "--params", trained)
    assert r.exit_code == 0 and "has changed since" in r.output
    assert "lam=0.1" in r.output           # the hypers still come from the record


def test_files_without_a_record_still_load(tmp_path):
    m = lossc.compile(LOGISTIC)
    params = m.init_params(0)
    for name in ("old.npz", "old.json"):
        path = save_params(tmp_path / name, params)
        assert trained_with(path) is None
        r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
        assert r.exit_code == 0 and "using" not in r.output
        assert objective(r.output) == pytest.approx(
            m.loss(params, **load_data(TEST, m)), rel=1e-9)


def test_json_record(tmp_path):
    m = lossc.compile(LOGISTIC)
    path = save_params(tmp_path / "p.json", m.init_params(0), model=m, hypers={"lam": 0.2})
    raw = json.loads(path.read_text())
    assert raw["__lossc__"]["hypers"] == {"lam": 0.2}
    assert trained_with(path).hypers == {"lam": 0.2}
    assert set(load_params(path, m)) == {"w", "b"}


def test_save_params_checks_its_hypers(tmp_path):
    m = lossc.compile(LOGISTIC)
    with pytest.raises(ValueError, match="'mu' is not a hyperparameter"):
        save_params(tmp_path / "p.npz", m.init_params(0), model=m, hypers={"mu": 1})
    with pytest.raises(ValueError, match="pass model="):
        save_params(tmp_path / "p.npz", m.init_params(0), hypers={"lam": 1})


def test_a_damaged_record_is_a_clear_error(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, w=np.zeros(8), b=np.zeros(()), __lossc__=np.array("{not json"))
    r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
    assert r.exit_code == 1 and "record is not JSON" in r.output
    np.savez(path, w=np.zeros(8), b=np.zeros(()), __lossc__=np.array('{"dims": 3}'))
    r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
    assert r.exit_code == 1 and "record is malformed" in r.output


@pytest.mark.parametrize("part, key, value, words", [
    ("dims", "D", -3, "dim 'D' is -3"),
    ("dims", "D", 0, "dim 'D' is 0"),
    ("dims", "D", 8.5, "dim 'D' is 8.5"),
    ("dims", "D", True, "dim 'D' is True"),
    ("dims", "D", 2 ** 70, "a dim is a positive integer"),
    ("hypers", "lam", float("nan"), "hyper 'lam' holds nan"),
    ("hypers", "lam", float("inf"), "hyper 'lam' holds inf"),
    ("hypers", "lam", True, "hyper 'lam' holds True"),
    ("hypers", "lam", "abc", "hyper 'lam' holds 'abc'"),
    ("hypers", "lam", [1, None], "hyper 'lam' holds None"),
])
def test_a_record_is_checked_as_the_command_line_is(tmp_path, trained, part, key, value,
                                                      words):
    """A record's dims and hypers are held to what --dim and --hyper accept: a one-line
    error naming the parameters file, not a dim truncated, a NaN used, or the .loss
    file blamed for a value it does not hold."""
    path = tmp_path / "p.npz"
    with np.load(trained) as f:
        arrays = {k: f[k] for k in f.files}
    record = json.loads(str(arrays["__lossc__"]))
    record[part][key] = value
    arrays["__lossc__"] = np.array(json.dumps(record))
    np.savez(path, **arrays)
    r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
    assert r.exit_code == 1, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"lossc: error: {path}: ") and words in line, line
    with pytest.raises(ValueError, match="record is malformed"):
        trained_with(path)


@pytest.mark.parametrize("dtype", ["float16", 32, None])
def test_a_records_dtype_is_one_lossc_compiles(tmp_path, trained, dtype):
    """A record of dtype float16 was compiled as asked, and the error named neither the
    parameters file nor its record."""
    path = tmp_path / "p.npz"
    with np.load(trained) as f:
        arrays = {k: f[k] for k in f.files}
    record = json.loads(str(arrays["__lossc__"]))
    record["dtype"] = dtype
    arrays["__lossc__"] = np.array(json.dumps(record))
    np.savez(path, **arrays)
    r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
    (line,) = r.output.strip().splitlines()
    assert r.exit_code == 1 and line == (
        f"lossc: error: {path}: its '__lossc__' record is malformed (dtype is {dtype!r}; "
        "lossc compiles float64 or float32)"), line


# ------------------------------------------------------------ where parameters and plots go

def test_without_out_the_parameters_go_to_the_current_folder(tmp_path, monkeypatch):
    model = tmp_path / "models" / "rosen.loss"
    model.parent.mkdir()
    model.write_text((SAMPLES / "rosenbrock.loss").read_text())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = run("train", model, "--steps", "3")
    assert r.exit_code == 0, r.output
    assert (work / "rosen.params.npz").is_file() and not (model.parent / "rosen.params.npz").exists()
    assert "replaced" not in r.output
    # a second run says, before it starts, that it replaces the file
    before = (work / "rosen.params.npz").read_bytes()
    r = run("train", model, "--steps", "5")
    assert r.exit_code == 0 and "rosen.params.npz exists and will be replaced" in r.output
    assert r.output.index("will be replaced") < r.output.index("Reached")
    assert (work / "rosen.params.npz").read_bytes() != before


def test_the_plot_marks_the_best_epoch_and_picks_its_scale():
    pytest.importorskip("matplotlib")
    from lossc.cli_train import draw_curve, y_scale
    from lossc.optim import TrainResult
    assert y_scale([0.69, 0.5, 0.45, 0.42, 0.41]) == "linear"
    # the first value dwarfs the rest: flat on a linear axis
    flat = [50.0, 1.0, 0.9, 0.85, 0.8, 0.78, 0.77, 0.76, 0.75, 0.74, 0.73]
    assert y_scale(flat) == "log"
    assert y_scale([4.0, 1e-3, 1e-9, 1e-20]) == "log"             # a factor of 1e20
    assert y_scale([100.0, -1.0, -1.1, -1.15, -1.2]) == "symlog"   # not all positive
    r = TrainResult(params={}, history=flat, val_history=[], best_loss=0.73, best_epoch=10,
                    best_step=10, last_params={}, steps=10, epochs=10, stopped="epochs",
                    stopped_reason="reached 10 epochs")
    fig = draw_curve(r, "t", by_steps=False, per_epoch=1)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    best = [ln for ln in ax.get_lines() if ln.get_label() == "best: epoch 10"]
    assert len(best) == 1 and list(best[0].get_ydata()) == [0.73]
    assert any(t.get_text() == "best: epoch 10" for t in ax.get_legend().get_texts())
    # with a validation curve the best is marked on it
    r.val_history, r.best_epoch = [3.0, 2.0, 1.5, 1.6], 2
    r.history = r.history[:4]
    fig = draw_curve(r, "t", by_steps=False, per_epoch=1)
    best = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "best: epoch 2"]
    assert list(best[0].get_ydata()) == [1.5]


def test_a_device_as_the_model_with_a_recorded_file_is_an_error_not_a_hang(trained):
    import subprocess
    import sys
    from conftest import ROOT
    p = subprocess.run([sys.executable, "-m", "lossc.cli", "eval", "/dev/zero", "--params",
                        str(trained), "--data", str(TEST)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "/dev/zero" in p.stderr and "not a regular file" in p.stderr


def test_a_record_naming_other_hypers_than_the_same_source_is_refused(tmp_path, trained):
    """{"zzz": 1.0} and no lam: lam fell back to the file's default without a word."""
    path = tmp_path / "p.npz"
    with np.load(trained) as f:
        arrays = {k: f[k] for k in f.files}
    record = json.loads(str(arrays["__lossc__"]))
    record["hypers"] = {"zzz": 1.0}
    arrays["__lossc__"] = np.array(json.dumps(record))
    np.savez(path, **arrays)
    r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
    assert r.exit_code == 1, r.output
    assert r.output.strip() == (f"lossc: error: {path} does not fit logistic.loss: the "
                                "record's hyperparameters (zzz) are not the model's (lam)")


@pytest.mark.parametrize("text, key", [('{"w": [1, 2, 3, 4, 5, 6, 7, 8], "b": 1, "b": 2}', "b"),
                                       ('{"w": [0, 0, 0, 0, 0, 0, 0, 0], "b": 0, "__lossc__": '
                                        '{"dims": {"D": 8}, "dims": {"D": 4}}}', "dims")])
def test_a_name_twice_in_a_json_object_is_refused(tmp_path, text, key):
    """json kept the last of the two silently."""
    path = tmp_path / "p.json"
    path.write_text(text)
    r = run("eval", LOGISTIC, "--data", TEST, "--params", path)
    assert r.exit_code == 1 and f"'{key}' appears twice in one JSON object" in r.output, \
        r.output
