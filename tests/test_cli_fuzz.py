"""Every command with bad inputs: missing files, folders where files belong, empty
files, binary junk, damaged .npz, bad option values. Whatever the input, a command ends
with a report (exit status 1, or 2 for a malformed option as click reports it) and never
a traceback."""
import io
import re
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from lossc.cli import main

LOGISTIC = SAMPLES / "logistic.loss"
CSV = SAMPLES / "data" / "logistic.csv"
# a report's first line: lossc's own, or a .loss file's mistake at file:line:col
REPORT = re.compile(r"lossc: error: |Usage: |.+:\d+:\d+: error: ")

CONTENTS = {
    "missing": None,
    "folder": "folder",
    "empty": b"",
    "junk": bytes(range(256)) * 8,
    "nul": b"\0" * 64,
    "latin1": "caf\xe9, na\xefve\n".encode("latin-1"),
    "text": b"hello, world\n1,2\n",
    "zip-like": b"PK\x03\x04" + bytes(range(256)),
    "npy-like": b"\x93NUMPY" + bytes(range(256)),
    "deep-json": b'{"w": ' + b"[" * 50000 + b"]" * 50000 + b"}",
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """{(content, suffix): path} for every CONTENTS and input suffix, and a cut-short
    .npz."""
    root = tmp_path_factory.mktemp("bad")
    out = {}
    for name, content in CONTENTS.items():
        for suffix in (".loss", ".csv", ".npz", ".npy", ".json", ".lossc"):
            path = root / f"{name}{suffix}"
            if content == "folder":
                path.mkdir()
            elif content is not None:
                path.write_bytes(content)
            out[name, suffix] = path
    whole = root / "whole.npz"
    np.savez(whole, x=np.zeros((4, 8)), y=np.zeros(4), w=np.zeros(8), b=np.zeros(()))
    for suffix in (".npz", ".npy"):
        out["cut", suffix] = root / f"cut{suffix}"
        out["cut", suffix].write_bytes(whole.read_bytes()[:300])
    with zipfile.ZipFile(root / "text-member.npz", "w") as z:
        z.writestr("x.npy", b"not an array")
    out["text-member", ".npz"] = root / "text-member.npz"
    for name, member in NPZ_MEMBERS.items():
        with zipfile.ZipFile(root / f"{name}.npz", "w") as z:
            z.writestr("b.npy", _npy(np.zeros(())))
            z.writestr(*member)
        out[name, ".npz"] = root / f"{name}.npz"
    return out


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# members of a .npz whose names do not end in .npy: np.load parsed one that starts like
# a .npy array without a check (a header claiming 10**12 float64s: "Unable to allocate
# 7.28 TiB") and returned the bytes of any other
NPZ_MEMBERS = {
    "huge-member": ("w", _npy(np.zeros(8))[:128].replace(b"(8,)", b"(1000000000000,)")),
    "bytes-member": ("w", b"eight bytes or so"),
}


def check_clean(args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    assert r.exit_code in (1, 2), (args, r.exit_code, r.output)
    assert "Traceback" not in r.output, (args, r.output)
    assert REPORT.match(r.output), (args, r.output)
    if r.output.startswith("lossc: error: "):
        assert len(r.output.strip().splitlines()) == 1, (args, r.output)


def commands_on(path, tmp_path):
    out = tmp_path / "out"
    return [["compile", path, "-o", out / "m.lossc"], ["graph", path], ["ir", path],
            ["check", path], ["train", path, "--steps", "1", "--out", out / "p.npz"],
            ["eval", path, "--params", out / "none.npz"]]


@pytest.mark.parametrize("content", list(CONTENTS))
def test_a_bad_model_file(bad_files, tmp_path, content):
    (tmp_path / "out").mkdir()
    for suffix in (".loss", ".json", ".lossc"):
        for args in commands_on(bad_files[content, suffix], tmp_path):
            check_clean(args)
    assert not list((tmp_path / "out").iterdir())


def test_bad_data_and_parameter_files(bad_files, tmp_path):
    params = tmp_path / "p.npz"
    np.savez(params, w=np.zeros(8), b=np.zeros(()))
    out = tmp_path / "o.npz"
    for path in bad_files.values():
        check_clean(["train", LOGISTIC, "--data", path, "--epochs", "1", "--out", out])
        check_clean(["eval", LOGISTIC, "--data", path, "--params", params])
        check_clean(["train", LOGISTIC, "--data", CSV, "--init", path, "--epochs", "1",
                     "--out", out])
        check_clean(["eval", LOGISTIC, "--data", CSV, "--params", path])
        check_clean(["check", LOGISTIC, "--data", path])
        check_clean(["check", LOGISTIC, "--params", path])
    assert not out.exists()


def test_bad_output_paths(bad_files, tmp_path):
    model = tmp_path / "m.loss"
    model.write_text((SAMPLES / "seed.loss").read_text())
    (tmp_path / "afile").write_text("x")
    for path in [bad_files["folder", ".lossc"], bad_files["folder", ".npz"],
                 tmp_path / "nope" / "x", tmp_path / "afile" / "x.npz", model]:
        check_clean(["compile", model, "-o", path])
        if path != model:            # (--out m.loss writes m.loss.npz)
            check_clean(["train", model, "--steps", "1", "--out", path])
        check_clean(["train", model, "--steps", "1", "--out", tmp_path / "p.npz", "--plot",
                     path])
    assert model.read_text() == (SAMPLES / "seed.loss").read_text()


@pytest.mark.parametrize("name", list(NPZ_MEMBERS))
def test_a_npz_member_that_is_not_a_checked_array(bad_files, tmp_path, name):
    """Every command that reads a .npz, and the Python loaders: a one-line error that
    names the file and the member."""
    path = bad_files[name, ".npz"]
    params = tmp_path / "p.npz"
    np.savez(params, w=np.zeros(8), b=np.zeros(()))
    predicting = tmp_path / "predicting.loss"
    predicting.write_text(LOGISTIC.read_text() + "output p = sigmoid(z)\n")
    for args in (["eval", LOGISTIC, "--data", CSV, "--params", path],
                 ["eval", LOGISTIC, "--data", path, "--params", params],
                 ["predict", predicting, "--params", path, "--data", CSV, "--out",
                  tmp_path / "o.csv"],
                 ["predict", predicting, "--params", params, "--data", path, "--out",
                  tmp_path / "o.csv"],
                 ["check", LOGISTIC, "--params", path], ["check", LOGISTIC, "--data", path],
                 ["train", LOGISTIC, "--data", CSV, "--init", path, "--epochs", "1",
                  "--out", tmp_path / "o.npz"],
                 ["train", LOGISTIC, "--data", path, "--epochs", "1", "--out",
                  tmp_path / "o.npz"]):
        check_clean(args)
        output = CliRunner().invoke(main, [str(a) for a in args]).output
        assert output.startswith(f"lossc: error: {path}") and "member 'w'" in output, output
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.npz").exists()
    import lossc
    from lossc.optim import load_data
    from lossc.optim.params_io import load_params
    m = lossc.compile(LOGISTIC)
    for load in (lambda: load_params(path, m), lambda: load_data(path, m)):
        with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*member 'w'"):
            load()


@pytest.mark.parametrize("args", [
    ["--dim", "D=x"], ["--dim", "D"], ["--dim", "=3"], ["--dim", "D="], ["--dim", "D=-1"],
    ["--dim", "D=0"], ["--dim", "D=1.5"], ["--dim", "Q=3"], ["--dtype", "float16"],
])
def test_bad_model_options(args):
    for command in (["compile", LOGISTIC, "-o", "/nonexistent/m.lossc"], ["graph", LOGISTIC],
                    ["ir", LOGISTIC], ["check", LOGISTIC]):
        check_clean(command + args)


@pytest.mark.parametrize("args", [
    ["--batch-size", "x"], ["--batch-size", "-1"], ["--epochs", "0"], ["--steps", "-2"],
    ["--patience", "0"], ["--validation", "nan"], ["--validation", "1"], ["--seed", "-1"],
    ["--lr", "nan"], ["--lr", "inf"], ["--lr", "0"], ["--lr", "1e400"], ["--momentum", "nan"],
    ["--weight-decay", "-1"], ["--clip-norm", "0"], ["--tol-grad", "-inf"],
    ["--tol-loss", "nan"], ["--schedule", "step:0"], ["--schedule", ":"],
    ["--schedule", "cosine:x"], ["--schedule", "exponential:nan"], ["--monitor", "x"],
    ["--hyper", "lam=nan"], ["--hyper", "=1"], ["--hyper", "lam=1e999"],
    ["--hyper", "nope=1"], ["--optimizer", "x"], ["--plot", "curve.unknown"],
])
def test_bad_train_options(tmp_path, args):
    check_clean(["train", LOGISTIC, "--data", CSV, "--epochs", "1", *args, "--out",
                 tmp_path / "p.npz", "-q"])
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("args", [
    ["--batch", "0"], ["--batch", "-3"], ["--eps", "0"], ["--eps", "-1"], ["--eps", "nan"],
    ["--rtol", "inf"], ["--rtol", "0"], ["--seed", "-5"], ["--batch", "100000000000"],
    ["--hyper", "lam=inf"], ["--hyper", "lam"],
])
def test_bad_check_options(args):
    check_clean(["check", LOGISTIC, *args])


@pytest.mark.parametrize("args", [
    ["--hyper", "lam=nan"], ["--metric", "accuracy", "--label", "nope"],
    ["--metric", "nope"], ["--label", "x", "--metric", "accuracy"],
])
def test_bad_eval_options(tmp_path, args):
    params = tmp_path / "p.npz"
    np.savez(params, w=np.zeros(8), b=np.zeros(()))
    check_clean(["eval", LOGISTIC, "--data", CSV, "--params", params, *args])
