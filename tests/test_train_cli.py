"""`lossc train` and `lossc eval` end to end: real processes for the main paths (and
Ctrl-C), click's runner for the many error paths."""
import json
import math
import signal
import subprocess
import textwrap
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from conftest import ROOT, SAMPLES, drained_pipe
from lossc.cli import main
from lossc.optim import accuracy, load_data

DATA = SAMPLES / "data"
LOGISTIC = SAMPLES / "logistic.loss"


def lossc_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "lossc.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, **kw)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


def test_train_save_plot_and_eval(tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "params.npz", tmp_path / "loss.png"
    p = lossc_cli("train", LOGISTIC, "--data", DATA / "logistic.csv",
                  "--optimizer", "adam", "--lr", "0.01", "--batch-size", "64", "--epochs", "4",
                  "--seed", "0", "--hyper", "lam=0.1", "--out", out, "--plot", png)
    assert p.returncode == 0, p.stderr
    assert "training logistic.loss: 4000 samples, 63 steps an epoch, 4 epochs" in p.stderr
    assert "epoch 4/4  loss" in p.stderr and "samples/s" in p.stderr
    assert "Reached 4 epochs." in p.stdout and f"wrote {out} (w[8], b)" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = dict(np.load(out))
    # the same run from Python gives the same parameters, bit for bit
    m = lossc.compile(LOGISTIC)
    data = load_data(DATA / "logistic.csv", m)
    r = lossc.train(m, data=data, optimizer=lossc.Adam(lr=0.01), batch_size=64, epochs=4,
                    seed=0, hypers={"lam": 0.1})
    for k in r.params:
        np.testing.assert_array_equal(saved[k], r.params[k])
    p = lossc_cli("eval", LOGISTIC, "--data", DATA / "logistic_test.csv", "--params", out,
                  "--hyper", "lam=0.1", "--metric", "accuracy")
    assert p.returncode == 0, p.stderr
    test = load_data(DATA / "logistic_test.csv", m)
    lines = p.stdout.splitlines()
    assert float(lines[0].split()[1]) == pytest.approx(m.loss(r.params, **test, lam=0.1),
                                                       rel=1e-9)
    assert "on 1000 samples" in lines[0]
    assert float(lines[1].split()[1]) == pytest.approx(accuracy(m, r.params, test), abs=1e-4)


def test_train_by_steps_to_json(tmp_path):
    out = tmp_path / "p.json"
    p = lossc_cli("train", SAMPLES / "rosenbrock.loss", "--optimizer", "momentum", "--lr",
                  "1e-3", "--steps", "5000", "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert p.stderr == "" and "Reached 5000 steps." in p.stdout
    np.testing.assert_allclose(json.loads(out.read_text())["p"], np.ones(5), atol=1e-6)


def test_divergence_saves_the_best_and_fails(tmp_path):
    out = tmp_path / "p.npz"
    p = lossc_cli("train", LOGISTIC, "--data", DATA / "logistic.csv", "--optimizer", "sgd",
                  "--lr", "1e7", "--epochs", "3", "--out", out, "--quiet")
    assert p.returncode == 1
    assert "at step" in p.stderr and "smaller learning rate" in p.stderr
    assert "Traceback" not in p.stderr
    saved = np.load(out)
    assert np.all(np.isfinite(saved["w"])) and f"wrote {out}" in p.stdout


def interrupted_training(out, *args, signals: int = 1, gap: float = 0.0,
                         timeout: float = 60) -> tuple:
    """lossc train on the logistic sample for longer than any test waits, sent up to
    `signals` SIGINTs `gap` seconds apart once it trains: (status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "lossc.cli", "train", str(LOGISTIC),
                             "--data", str(DATA / "logistic.csv"), "--batch-size", "1",
                             "--epochs", "100000", "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        first = proc.stderr.readline()        # printed just before training starts
        assert first.startswith("training logistic.loss"), first
        time.sleep(0.5)
        for _ in range(signals):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGINT)
            time.sleep(gap)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, stderr


def test_ctrl_c_stops_cleanly_and_saves(tmp_path):
    out = tmp_path / "p.npz"
    status, stdout, stderr = interrupted_training(out)
    assert status == 130, stderr
    assert "interrupted at step" in stderr and "Traceback" not in stderr
    assert f"wrote {out}" in stdout
    assert np.all(np.isfinite(np.load(out)["w"]))


@pytest.mark.parametrize("gap", [0.0, 0.001, 0.005])
def test_repeated_ctrl_c_still_saves(tmp_path, gap):
    """A burst of SIGINTs, `gap` seconds apart, as impatient hands send: the first
    stops the run; the others came while it stopped and wrote the parameters, and
    ended the command with 'Aborted!' (status 1, no file), a KeyboardInterrupt
    traceback, or death by SIGINT. The parameters are written and the status is 130,
    whenever the later ones arrive."""
    out, plot = tmp_path / "p.npz", tmp_path / "curve.png"
    plotting = ["--plot", str(plot)] if _has_matplotlib() else []
    status, stdout, stderr = interrupted_training(out, *plotting, signals=40, gap=gap,
                                                  timeout=120)
    assert status == 130, (status, stderr)
    assert "interrupted at step" in stderr and "Traceback" not in stderr, stderr
    assert "Aborted" not in stderr, stderr
    assert f"wrote {out}" in stdout and np.all(np.isfinite(np.load(out)["w"]))
    if plotting:
        assert plot.read_bytes().startswith(b"\x89PNG")


def test_after_a_ctrl_c_later_ones_go_to_a_handler_that_does_nothing():
    """Not to SIG_IGN: a SIGINT that arrived while the first one's handler ran found
    SIG_IGN there, and Python printed 'Signal 2 ignored due to race condition' with a
    traceback (test_repeated_ctrl_c_still_saves, now and then)."""
    code = textwrap.dedent("""
        import signal
        from lossc.cli_train import first_interrupt_only

        @first_interrupt_only
        def command():
            signal.raise_signal(signal.SIGINT)

        try:
            command()
        except KeyboardInterrupt:
            print("stopped")
        signal.raise_signal(signal.SIGINT)
        print(callable(signal.getsignal(signal.SIGINT)))
        """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, "stopped\nTrue\n", "")


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv[0] = 'lossc'; "
            "from lossc.cli import main; main()")
    p = subprocess.run([sys.executable, "-c", code, "train", str(SAMPLES / "seed.loss"),
                        "--steps", "3", "--out", str(tmp_path / "p.npz"), "--plot",
                        str(tmp_path / "l.png")], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1
    assert "--plot needs matplotlib" in p.stderr and "lossc[plot]" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "p.npz").exists()


def test_out_and_plot_naming_pipes_are_written_in_place(tmp_path):
    """A device or a pipe is written in place, under its own name: the suffix rules
    (.npz appended to --out, .png to --plot) made train --out /dev/full write
    /dev/full.npz."""
    import io
    import os
    pytest.importorskip("matplotlib")
    out, plot = tmp_path / "params", tmp_path / "curve"
    os.mkfifo(out)
    os.mkfifo(plot)
    readers = [drained_pipe(out), drained_pipe(plot)]
    try:
        p = lossc_cli("train", SAMPLES / "seed.loss", "--steps", "3", "--out", out,
                      "--plot", plot, timeout=300)
        for reader, _, _ in readers:
            reader.join(timeout=60)
    finally:
        for _, _, fd in readers:
            os.close(fd)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["curve", "params"]
    assert f"wrote {out} (" in p.stdout and f"wrote {plot}\n" in p.stdout
    params = np.load(io.BytesIO(bytes(readers[0][1])))
    assert "__lossc__" in params.files and len(params.files) > 1
    assert bytes(readers[1][1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_train_options(tmp_path):
    out = tmp_path / "p.npz"
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--optimizer", "adamw",
            "--schedule", "cosine", "--validation", "0.25", "--clip-norm", "1",
            "--batch-size", "0", "--epochs", "30", "--tol-grad", "1e-12", "--out", out,
            "--quiet")
    assert r.exit_code == 0, r.output
    assert "best" in r.output and "on validation" in r.output
    r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--optimizer", "nesterov",
            "--lr", "0.05", "--momentum", "0.5", "--epochs", "2", "--init", out,
            "--dim", "D=8", "--out", tmp_path / "q.json")
    assert r.exit_code == 0, r.output
    assert "nesterov lr 0.05, momentum 0.5" in r.output
    assert set(json.loads((tmp_path / "q.json").read_text())) == {"w", "b", "__lossc__"}
    m32 = run("train", SAMPLES / "softmax.loss", "--data", DATA / "softmax.csv", "--dtype",
              "float32", "--epochs", "2", "--out", tmp_path / "s.npz")
    assert m32.exit_code == 0 and np.load(tmp_path / "s.npz")["W"].dtype == np.float32
    r = run("eval", SAMPLES / "softmax.loss", "--data", DATA / "softmax.csv", "--params",
            tmp_path / "s.npz", "--metric", "accuracy", "--dtype", "float32")
    assert r.exit_code == 0 and "labels from 'label'" in r.output


def test_monitor_batches_gives_the_same_parameters(tmp_path):
    outs = []
    for monitor in ("full", "batches"):
        out = tmp_path / f"{monitor}.npz"
        r = run("train", LOGISTIC, "--data", DATA / "logistic.csv", "--epochs", "3",
                "--monitor", monitor, "--out", out, "--quiet")
        assert r.exit_code == 0, r.output
        outs.append(np.load(out))
    # the best epoch may differ (the monitored losses differ), the run does not: both
    # keep the last epoch here, as the loss falls every epoch at this rate
    np.testing.assert_array_equal(outs[0]["w"], outs[1]["w"])


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("args, words", [
    (["--data", "missing.csv"], ["missing.csv", "no such file"]),
    ([], ["give the training data with --data"]),
    (["--data", DATA / "softmax.csv"], ["softmax.csv", "no column 'x.4' for input 'x'"]),
    (["--data", DATA / "logistic.csv", "--hyper", "lam"], ["NAME=VALUE"]),
    (["--data", DATA / "logistic.csv", "--hyper", "mu=1"], ["unknown hyperparameter 'mu'"]),
    (["--data", DATA / "logistic.csv", "--schedule", "wiggle"], ["bad schedule"]),
    (["--data", DATA / "logistic.csv", "--optimizer", "adam", "--momentum", "0.9"],
     ["does not apply to adam"]),
    (["--data", DATA / "logistic.csv", "--lr", "-1"], ["learning rate"]),
    (["--data", DATA / "logistic.csv", "--batch-size", "-4"], ["--batch-size"]),
    (["--data", DATA / "logistic.csv", "--validation", "2"], ["--validation", "fraction"]),
    (["--data", DATA / "logistic.csv", "--validation", "0.9999"], ["for training", "both"]),
    (["--data", DATA / "logistic.csv", "--init", "nope.npz"], ["nope.npz", "no such file"]),
    (["--data", DATA / "logistic.csv", "--dim", "D=4"],
     ["'x.4' matches no input", "x.0 .. x.3, y"]),
    (["--data", DATA / "logistic.csv", "--optimizer", "bfgs"], ["bfgs"]),
    (["--data", DATA / "logistic.csv", "--optimizer", "lbfgs", "--batch-size", "64"],
     ["--batch-size does not apply to lbfgs"]),
    (["--data", DATA / "logistic.csv", "--plot", "/nonexistent/l.png"],
     ["--plot", "does not exist"]),
])
def test_train_errors(tmp_path, args, words):
    r = run("train", LOGISTIC, *args, "--out", tmp_path / "p.npz")
    assert r.exit_code in (1, 2), r.output        # 2: click's usage errors
    for w in words:
        assert w in r.output, r.output
    assert not (tmp_path / "p.npz").exists()


def test_data_errors_name_row_and_column(tmp_path):
    bad = write(tmp_path / "bad.csv", "x.0,x.1,x.2,x.3,x.4,x.5,x.6,x.7,y\n"
                "1,2,3,4,5,6,7,8,1\n1,2,3,,5,6,7,8,0\n")
    r = run("train", LOGISTIC, "--data", bad)
    assert r.exit_code == 1 and "row 3, column 'x.3'" in r.output
    labels = write(tmp_path / "labels.csv", "x.0,x.1,x.2,x.3,label\n1,2,3,4,0.5\n")
    r = run("train", SAMPLES / "softmax.loss", "--data", labels)
    assert r.exit_code == 1 and "row 2, column 'label': 0.5 is not an integer" in r.output
    r = run("train", SAMPLES / "rosenbrock.loss", "--data", bad)
    assert r.exit_code == 1 and "no inputs" in r.output


def test_compile_errors_are_reports(tmp_path):
    src = write(tmp_path / "bad.loss", "param w\nloss = w * nope\n")
    p = lossc_cli("train", src, "--steps", "3")
    assert p.returncode == 1
    assert "bad.loss:2:12: error:" in p.stderr and "Traceback" not in p.stderr


def test_eval_errors(tmp_path):
    params = tmp_path / "p.npz"
    np.savez(params, w=np.zeros(3), b=np.zeros(()))
    r = run("eval", LOGISTIC, "--data", DATA / "logistic_test.csv", "--params", params)
    assert r.exit_code == 1 and "'w' has shape (3,)" in r.output
    r = run("eval", LOGISTIC, "--data", DATA / "logistic_test.csv", "--params", "none.npz")
    assert r.exit_code == 1 and "no such file" in r.output
    np.savez(params, w=np.zeros(8), b=np.zeros(()))
    r = run("eval", LOGISTIC, "--params", params)
    assert r.exit_code == 1 and "--data" in r.output
    r = run("eval", LOGISTIC, "--data", DATA / "logistic_test.csv", "--params", params,
            "--metric", "accuracy", "--label", "x")
    assert r.exit_code == 1 and "not a scalar" in r.output
    r = run("eval", SAMPLES / "seed.loss", "--params", write(tmp_path / "s.json",
                                                              '{"x1": 2, "x2": 5}'))
    assert r.exit_code == 0 and r.output.startswith("objective 11.65207146")


def test_help():
    for cmd in ("train", "eval"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output
    assert "--optimizer [sgd|momentum|nesterov|rmsprop|adam|adamw|lbfgs|newton-cg]" in \
        run("train", "--help").output


# ------------------------------------------------------------ outputs, files, values

def run_clean(*args):
    """click's runner, failing the test on any exception other than a clean exit (the
    runner turns an uncaught exception into exit status 1 and keeps its traceback out
    of the output)."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def refused(r, *words):
    """A mistake reported on one line with exit status 1."""
    assert r.exit_code == 1, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output


def unwritable_paths(tmp_path):
    import os
    (tmp_path / "file").write_text("x")
    paths = {"missing folder": tmp_path / "nope" / "p.npz",
             "a file as folder": tmp_path / "file" / "p.npz",
             "proc": "/proc/p.npz"}
    if os.geteuid() != 0:                        # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        paths["read-only folder"] = ro / "p.npz"
    return paths


@pytest.mark.parametrize("kind", ["missing folder", "a file as folder", "proc",
                                  "read-only folder"])
def test_unwritable_out_or_plot_is_refused_before_training(tmp_path, kind):
    path = unwritable_paths(tmp_path).get(kind)
    if path is None:
        pytest.skip("running as root")
    r = run_clean("train", LOGISTIC, "--data", DATA / "logistic.csv", "--out", path)
    refused(r, f"cannot write --out {path}")
    assert "training logistic.loss" not in r.output       # refused before the run
    png = str(path).replace(".npz", ".png")
    r = run_clean("train", LOGISTIC, "--data", DATA / "logistic.csv", "--plot", png,
                  "--out", tmp_path / "ok.npz")
    refused(r, f"cannot write --plot {png}")
    assert not (tmp_path / "ok.npz").exists()


def test_plot_format_is_checked_before_training(tmp_path):
    pytest.importorskip("matplotlib")
    r = run_clean("train", LOGISTIC, "--data", DATA / "logistic.csv", "--plot",
                  tmp_path / "curve.txt", "--out", tmp_path / "p.npz")
    refused(r, "matplotlib cannot write .txt files")
    assert not (tmp_path / "p.npz").exists()


def test_out_never_overwrites_an_input(tmp_path):
    data = tmp_path / "d.npz"
    m = lossc.compile(LOGISTIC)
    np.savez(data, **load_data(DATA / "logistic.csv", m))
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"w": [0.0] * 8, "b": 0.0}))
    model = tmp_path / "model.json"              # a .loss file may have any name
    plot_model = tmp_path / "model.svg"
    plot_model.write_text(LOGISTIC.read_text())
    model.write_text(LOGISTIC.read_text())
    (tmp_path / "alias.npz").hardlink_to(data)
    (tmp_path / "link.npz").symlink_to(data)
    (tmp_path / "p_link.png").symlink_to(tmp_path / "p.npz")
    saved = {p: p.read_bytes() for p in (data, init, model, plot_model)}
    base = ["train", LOGISTIC, "--data", data, "--epochs", "1"]
    for args, words in [
        (base + ["--out", data], ["--out", "same file as --data"]),
        (base + ["--out", tmp_path / "alias.npz"], ["same file as --data"]),
        (base + ["--out", tmp_path / "link.npz"], ["same file as --data"]),
        (base + ["--init", init, "--out", init], ["same file as --init"]),
        (["train", model, "--data", data, "--out", model], ["same file as FILE"]),
        (["train", plot_model, "--data", data, "--out", tmp_path / "p.npz", "--plot",
          plot_model],
         ["--plot", "same file as FILE"]),
        # (a link named .png to --out: the plot was written over the parameters)
        (base + ["--out", tmp_path / "p.npz", "--plot", tmp_path / "p_link.png"],
         ["--plot", "same file as --out"]),
    ]:
        refused(run_clean(*args), *words, "refusing to overwrite")
    for p, content in saved.items():
        assert p.read_bytes() == content
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("bad, words", [(np.nan, "'w[3]' is NaN"),
                                        (np.inf, "'w[3]' is infinite"),
                                        (1e300, "'w[3]' is 1e+300, beyond float32's range")])
def test_a_parameter_file_holding_nan_is_refused_before_anything_is_written(tmp_path, bad,
                                                                          words):
    """A NaN start trained nothing and its NaN parameters replaced a good --out; eval
    printed a NaN objective and exited 0."""
    good = tmp_path / "good.npz"
    r = run_clean("train", LOGISTIC, "--data", DATA / "logistic.csv", "--epochs", "1",
                  "--out", good)
    assert r.exit_code == 0, r.output
    saved = good.read_bytes()
    w = np.zeros(8)
    w[3] = bad
    init = tmp_path / "bad.npz"
    np.savez(init, w=w, b=0.0)
    dtype = ["--dtype", "float32"] if bad == 1e300 else []
    for args in (["train", LOGISTIC, "--data", DATA / "logistic.csv", "--init", init,
                  "--out", good, *dtype],
                 ["eval", LOGISTIC, "--data", DATA / "logistic.csv", "--params", init,
                  *dtype]):
        refused(run_clean(*args), words, "parameters must be finite")
    assert good.read_bytes() == saved


def write_failure_model(tmp_path):
    src = tmp_path / "wide.loss"
    src.write_text("dim N = 4000\nparam w[N]\nloss = sum((w - 1) ^ 2)\n")
    return src


def test_a_failed_write_keeps_the_old_parameters(tmp_path):
    import os
    import resource
    import signal
    src, out = write_failure_model(tmp_path), tmp_path / "p.npz"
    np.savez(out, w=np.full(4000, 7.0))
    old = out.read_bytes()
    p = lossc_cli("train", src, "--steps", "2", "--out", tmp_path / "warm.npz", "-q")
    assert p.returncode == 0, p.stderr              # (and the compile cache is warm)
    size = len((tmp_path / "warm.npz").read_bytes()) // 2   # too small for the parameters

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    p = lossc_cli("train", src, "--steps", "2", "--out", out, "-q", preexec_fn=limit,
                  timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"cannot write {out}: File too large" in p.stderr
    assert out.read_bytes() == old                  # the old file, whole
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_save_params_replaces_a_file_whole(tmp_path):
    from lossc.optim import save_params
    out = tmp_path / "p.json"
    out.write_text("old")
    out.chmod(0o640)
    assert save_params(out, {"a": np.arange(3.0)}) == out
    assert json.loads(out.read_text()) == {"a": [0.0, 1.0, 2.0]}
    assert out.stat().st_mode & 0o777 == 0o640       # the old file's permissions
    assert save_params(tmp_path / "q", {"a": 1.0}) == tmp_path / "q.npz"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.json", "q.npz"]


# names np.savez takes as its own arguments: 'file' clashed with its first one (a
# traceback after training) and 'allow_pickle' was taken as that option (not saved)
SAVEZ_ARGUMENT_NAMES = "param file = 0\nparam allow_pickle[2] = 0\nparam args = 0\n" \
    "param kwds = 0\nloss = (file - 1) ^ 2 + sum((allow_pickle - 2) ^ 2) + " \
    "(args - 3) ^ 2 + (kwds - 4) ^ 2\n"
SAVEZ_ARGUMENT_MINIMUM = {"file": 1.0, "allow_pickle": [2.0, 2.0], "args": 3.0, "kwds": 4.0}


def test_train_out_saves_parameters_named_as_numpy_savez_arguments(tmp_path):
    src, out = tmp_path / "m.loss", tmp_path / "p.npz"
    src.write_text(SAVEZ_ARGUMENT_NAMES)
    r = run("train", src, "--optimizer", "lbfgs", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    saved = np.load(out)
    assert set(saved.files) == {*SAVEZ_ARGUMENT_MINIMUM, "__lossc__"}
    for k, want in SAVEZ_ARGUMENT_MINIMUM.items():
        np.testing.assert_allclose(saved[k], want, rtol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", ["p.npz", "p.json"])
def test_save_params_round_trips_parameters_named_as_numpy_savez_arguments(tmp_path, name):
    from lossc.optim import load_params, save_params
    m = lossc.compile(SAVEZ_ARGUMENT_NAMES)
    params = {"file": np.float64(0.5), "allow_pickle": np.array([1.5, -2.0]),
              "args": np.float64(3.25), "kwds": np.float64(-4.0)}
    path = save_params(tmp_path / name, params, model=m)
    loaded = load_params(path, m)
    assert list(loaded) == list(params)
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k], err_msg=k)


def damaged_npz(tmp_path, name: str, arrays: dict) -> dict:
    """An .npz written whole, then cut short, with 8 bytes of its first array
    overwritten (stored: the CRC fails), and compressed with the same damage (the
    deflate stream breaks)."""
    import struct
    import zipfile

    def overwrite(path):
        data = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as z:
            at = z.infolist()[0].header_offset
        name_len, extra_len = struct.unpack("<HH", data[at + 26:at + 30])
        start = at + 30 + name_len + extra_len + 200      # past the .npy header
        data[start:start + 8] = b"\xff" * 8
        path.write_bytes(bytes(data))

    first = {k: np.arange(2000.0) for k in arrays}     # (long enough to damage)
    out = {"cut short": tmp_path / f"{name}-cut.npz", "bad crc": tmp_path / f"{name}-crc.npz",
           "bad deflate": tmp_path / f"{name}-zlib.npz"}
    np.savez(out["cut short"], **arrays)
    out["cut short"].write_bytes(out["cut short"].read_bytes()[:200])
    np.savez(out["bad crc"], **first)
    overwrite(out["bad crc"])
    np.savez_compressed(out["bad deflate"], **first)
    overwrite(out["bad deflate"])
    return out


@pytest.mark.parametrize("damage", ["cut short", "bad crc", "bad deflate"])
def test_damaged_npz_for_data_init_and_params(tmp_path, damage):
    m = lossc.compile(LOGISTIC)
    data = damaged_npz(tmp_path, "d", load_data(DATA / "logistic.csv", m))[damage]
    params = damaged_npz(tmp_path, "p", {"w": np.zeros(8), "b": np.zeros(())})[damage]
    reason = {"cut short": "not a valid .npz (zip) file", "bad crc": "Bad CRC-32",
              "bad deflate": "its compressed data is corrupt"}[damage]
    refused(run_clean("train", LOGISTIC, "--data", data, "--out", tmp_path / "o.npz"),
            f"{data}: cannot read it as .npz", reason)
    for args in (["train", LOGISTIC, "--data", DATA / "logistic.csv", "--init", params,
                  "--out", tmp_path / "o.npz"],
                 ["eval", LOGISTIC, "--data", DATA / "logistic.csv", "--params", params]):
        refused(run_clean(*args), f"{params}: cannot read parameters", reason)
    assert not (tmp_path / "o.npz").exists()


def npy_claiming(path, shape, data: bytes = b"\0" * 64):
    from numpy.lib import format as npy_format
    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                              "shape": shape})
        f.write(data)
    return path


def test_npy_whose_header_claims_more_than_the_file_holds(tmp_path):
    src = tmp_path / "one.loss"
    src.write_text("input x\nparam w\nloss = (w - x) ^ 2\n")
    huge = npy_claiming(tmp_path / "huge.npy", (10 ** 12,))
    p = lossc_cli("train", src, "--data", huge, "--out", tmp_path / "p.npz", timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "more than this machine's memory" in p.stderr
    short = npy_claiming(tmp_path / "short.npy", (1000,))
    with pytest.raises(lossc.optim.DataError, match=r"cut short: its header says shape "
                       r"\(1000,\) of float64 \(8,000 bytes\), but the file holds 64"):
        load_data(short, lossc.compile(src))
    assert len(load_data(npy_claiming(tmp_path / "ok.npy", (8,)), lossc.compile(src))["x"]) == 8


@pytest.mark.parametrize("command", ["train", "compile", "predict"])
@pytest.mark.parametrize("value, words", [("", "is empty: name the file to write"),
                                          ("sub/", "sub/ names a folder")])
def test_an_output_that_names_no_file_is_refused(tmp_path, monkeypatch, command, value,
                                                 words):
    """--out '' was a traceback (an empty name); --out sub/ wrote the file sub.npz."""
    monkeypatch.chdir(tmp_path)
    args = {"train": ["train", LOGISTIC, "--data", DATA / "logistic.csv", "--steps", "1",
                      "--out", value],
            "compile": ["compile", LOGISTIC, "-o", value],
            "predict": ["predict", LOGISTIC, "--params", "p.npz", "--data",
                        DATA / "logistic.csv", "--out", value]}[command]
    refused(run_clean(*args), words)
    if command == "train":
        refused(run_clean(*args[:-2], "--plot", value), "--plot", words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_float32_data_beyond_its_range_names_the_file_and_row(tmp_path, suffix):
    """1e39 in float32 data was reported after the conversion: "data: sample 1,
    column 'x.0' is inf", without the file or its line."""
    (tmp_path / "o.loss").write_text("dim D = 2\ninput x[D]\nparam mu[D]\n"
                                     "loss = sum((x - mu) ^ 2)\n")
    data = tmp_path / f"big{suffix}"
    if suffix == ".csv":
        data.write_text("x.0,x.1\n1,1\n1e39,1\n")
        where = "row 3"
    else:
        np.savez(data, x=np.array([[1.0, 1.0], [1e39, 1.0]]))
        where = "sample 1"
    r = run_clean("train", tmp_path / "o.loss", "--data", data, "--dtype", "float32",
                  "--out", tmp_path / "p.npz")
    refused(r, f"{data}: {where}, column 'x.0' is 1e+39, beyond float32's range")
    assert run_clean("train", tmp_path / "o.loss", "--data", data, "--steps", "1",
                     "--out", tmp_path / "p.npz").exit_code == 0      # (float64 holds it)


@pytest.mark.parametrize("args, words", [
    (["--lr", "1_0"], "Invalid value for '--lr': '1_0' is not a number"),
    (["--lr", "\uff11e-3"], "Invalid value for '--lr'"),
    (["--epochs", "\u0668"], "Invalid value for '--epochs': '\u0668' is not an integer"),
    (["--seed", "1_000"], "Invalid value for '--seed': '1_000' is not an integer"),
])
def test_number_options_take_numbers_as_data_files_write_them(tmp_path, args, words):
    """click's float and int read 1_0 as 10, and digits of other scripts."""
    r = run_clean("train", LOGISTIC, "--data", DATA / "logistic.csv", *args, "--out",
                  tmp_path / "p.npz", "-q")
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("args, status, words", [
    (["--batch", "1_0"], 2, "Invalid value for '--batch': '1_0' is not an integer"),
    (["--seed", "\u0663"], 2, "Invalid value for '--seed': '\u0663' is not an integer"),
    (["--batch", "0"], 1, "--batch must be positive, got 0"),
    (["--seed", "-1"], 1, "--seed must be >= 0, got -1"),
])
def test_check_takes_its_numbers_as_train_does(args, status, words):
    """A value that is not a number is a usage error (2), a number out of range a
    refusal (1), as train's options are."""
    r = run_clean("check", LOGISTIC, *args)
    assert r.exit_code == status and words in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_float32_data_reports_its_first_bad_value_in_row_order(tmp_path):
    """A NaN in row 2 above a 1e39 in row 3: the 1e39 was reported, the NaN skipped."""
    (tmp_path / "o.loss").write_text("dim D = 2\ninput x[D]\nparam mu[D]\n"
                                     "loss = sum((x - mu) ^ 2)\n")
    data = tmp_path / "d.csv"
    data.write_text("x.0,x.1\n1,nan\n1e39,1\n")
    r = run_clean("train", tmp_path / "o.loss", "--data", data, "--dtype", "float32",
                  "--out", tmp_path / "p.npz")
    refused(r, f"{data}: row 2, column 'x.1' is NaN")


def test_params_json_that_is_not_arrays(tmp_path):
    for name, text, words in [
            ("deep.json", '{"w": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
            ("obj.json", '{"w": {"a": 1}, "b": 0}', "'w' is not an array of numbers"),
            ("bin.json", "\udcff", "not a text file"),
            # (read as 1 and 1.5 by NumPy, and trained from)
            ("true.json", '{"w": [true, 0, 0, 0, 0, 0, 0, 0], "b": 0}', "'w' is not an array"),
            ("text.json", '{"w": [0, 0, 0, 0, 0, 0, 0, 0], "b": "1.5"}', "'b' is not an array"),
            ("big.json", '{"w": [0, 0, 0, 0, 0, 0, 0, 0], "b": 1' + "0" * 400 + "}",
             "'b' holds a number beyond float64's range")]:
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        refused(run_clean("eval", LOGISTIC, "--data", DATA / "logistic.csv", "--params",
                          path), str(path), words)


@pytest.mark.parametrize("args, words", [
    (["--hyper", "lam=nan"], ["--hyper: lam must be a finite number, got 'nan'"]),
    (["--hyper", "lam=1e400"], ["--hyper: lam must be a finite number, got '1e400'"]),
    (["--hyper", "lam=inf"], ["--hyper: lam must be a finite number"]),
    (["--hyper", "lam"], ["--hyper: expected NAME=VALUE"]),
    (["--schedule", ""], ["bad schedule ''"]),
    # (Python's int and float read these as 10, 1e-3 and 8; data files refuse them)
    (["--hyper", "lam=1_0"], ["--hyper: lam must be a finite number, got '1_0'"]),
    (["--hyper", "lam=\uff11e-3"], ["--hyper: lam must be a finite number"]),
    (["--dim", "D=\u0668"], ["--dim: D must be an integer"]),
    (["--lr", "nan"], ["--lr must be a finite number, got nan"]),
    (["--lr", "inf"], ["--lr must be a finite number, got inf"]),
    (["--lr", "-1"], ["learning rate must be a positive number"]),
    (["--epochs", "0"], ["--epochs must be positive, got 0"]),
    (["--epochs", "-3"], ["--epochs must be positive, got -3"]),
    (["--steps", "0"], ["--steps must be positive"]),
    (["--seed", "-1"], ["--seed must be >= 0, got -1"]),
    (["--optimizer", "momentum", "--momentum", "inf"], ["--momentum must be a finite number"]),
    (["--tol-grad", "nan"], ["--tol-grad must be a finite number"]),
    (["--tol-loss", "-1"], ["--tol-loss must be >= 0"]),
    (["--schedule", "exponential:inf"], ["exponential schedule: gamma must be a finite number", "inf"]),
    (["--schedule", "step:2:-0.5"], ["step schedule: gamma must be a finite number >= 0", "-0.5"]),
])
def test_option_values_are_one_line_errors(tmp_path, args, words):
    r = run_clean("train", LOGISTIC, "--data", DATA / "logistic.csv", *args, "--out",
                  tmp_path / "p.npz", "-q")
    refused(r, *words)
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("dtype, x", [("float64", 1e300), ("float32", 1e30)])
def test_eval_gradient_norm_does_not_overflow(tmp_path, dtype, x):
    """At w = 0, b = 0 and every y = 0, each sample's gradient in w is sigmoid(0) x =
    x / 2: the norm over the 8 weights (b's is 1/2) is sqrt(8) x / 2. Its squares
    overflowed: 'gradient norm inf', and NumPy's RuntimeWarning on stderr."""
    data, params = tmp_path / "big.npz", tmp_path / "zero.npz"
    np.savez(data, x=np.full((4, 8), x), y=np.zeros(4))
    np.savez(params, w=np.zeros(8), b=np.zeros(()))
    p = lossc_cli("eval", LOGISTIC, "--dtype", dtype, "--data", data, "--params", params,
                  timeout=300)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert f"gradient norm {math.sqrt(8) * x / 2:.4g}\n" in p.stdout, p.stdout


def test_eval_hyper_must_be_finite(tmp_path):
    params = tmp_path / "p.npz"
    np.savez(params, w=np.zeros(8), b=np.zeros(()))
    refused(run_clean("eval", LOGISTIC, "--data", DATA / "logistic.csv", "--params", params,
                      "--hyper", "lam=nan"), "--hyper: lam must be a finite number")


@pytest.mark.parametrize("cell", ["1_0", "\u0661\u0662", "\uff11", "0x10", "1,0"])
def test_csv_numbers_are_ascii_decimals(tmp_path, cell):
    m = lossc.compile(LOGISTIC)
    header = ",".join([f"x.{j}" for j in range(8)] + ["y"])
    quoted = f'"{cell}"'
    cases = [(f"{header}\n1,2,3,4,5,6,7,8,1\n1,2,{quoted},4,5,6,7,8,0\n", 3, "'x.2'")]
    if cell in ("1_0", "\u0661\u0662", "\uff11"):
        # float() reads these, so a first row holding one is data, not a header
        cases.append((f"1,{quoted},3,4,5,6,7,8,1\n", 1, "'#2'"))
    for text, line, column in cases:
        path = tmp_path / "d.csv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(lossc.optim.DataError) as e:
            load_data(path, m)
        assert f"{path}: row {line}, column {column}: '{cell}' is not a number" in str(e.value)
        refused(run_clean("train", LOGISTIC, "--data", path, "--out", tmp_path / "p.npz"),
                f"row {line}, column {column}")


def test_csv_reads_nan_spellings_then_refuses_them_and_strips_any_space(tmp_path):
    m = lossc.compile(LOGISTIC)
    path = tmp_path / "d.csv"
    path.write_text("1,2,3,4,5,6,7,8,1\n1,2,-Infinity,4,5,6,7,8,0\n")
    with pytest.raises(lossc.optim.DataError, match=r"row 2, column '#3' is -inf"):
        load_data(path, m)
    path.write_text("1,2,3,4,5,6,7,8,1\n1,2,NaN,4,5,6,7,8,0\n")
    with pytest.raises(lossc.optim.DataError, match=r"row 2, column '#3' is NaN"):
        load_data(path, m)
    path.write_text("1,2,3,4,5,6,7,8,1\n1,2,\u00a03.5\u2003,4,5,6,7,8,0\n", encoding="utf-8")
    assert load_data(path, m)["x"][1, 2] == 3.5


def test_a_csv_header_for_an_input_of_ten_million_elements(tmp_path):
    # the header lacks x.2: reported without first naming all 10**7 columns x may have
    # (a billion would be refused first: the scratch space for such an input's samples
    # would not fit in memory)
    src = tmp_path / "wide.loss"
    src.write_text("dim D = 10000000\ninput x[D]\nparam a\nloss = a * sum(x) + a ^ 2\n")
    data = tmp_path / "d.csv"
    data.write_text("x.0,x.1\n1,2\n")
    p = subprocess.run([sys.executable, "-m", "lossc.cli", "train", str(src), "--data",
                        str(data), "--out", str(tmp_path / "p.npz")], capture_output=True,
                       text=True, cwd=ROOT, timeout=300,
                       preexec_fn=lambda: __import__("resource").setrlimit(
                           __import__("resource").RLIMIT_AS, (8 << 30, 8 << 30)))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "no column 'x.2' for input 'x'" in p.stderr
