"""The command line, through click's runner and once per command as a real process."""
import subprocess
import sys

import lossc
import pytest
from click.testing import CliRunner

from conftest import CONFORMANCE, ROOT, SAMPLES
from lossc.cli import main


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def subprocess_run(*args):
    return subprocess.run([sys.executable, "-m", "lossc.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_check_seed_prints_the_known_gradient():
    p = subprocess_run("check", SAMPLES / "seed.loss")
    assert p.returncode == 0, p.stderr
    assert "5.5" in p.stdout and "1.716337814536" in p.stdout
    assert "gradient check passed" in p.stdout


@pytest.mark.parametrize("name", ["logistic", "mlp", "softmax", "huber", "poisson", "linear",
                                  "rosenbrock"])
def test_check_samples(name):
    code, out = run("check", SAMPLES / f"{name}.loss")
    assert code == 0, out
    assert "gradient check passed" in out


def test_compile_writes_a_loadable_artifact(tmp_path):
    out = tmp_path / "lg.lossc"
    p = subprocess_run("compile", SAMPLES / "logistic.loss", "--dim", "D=16", "--dtype",
                       "float32", "-o", out)
    assert p.returncode == 0, p.stderr
    m = lossc.load(out)
    assert m.params[0].shape == (16,) and m.dtype.name == "float32"


def test_compile_error_is_a_report_not_a_traceback():
    p = subprocess_run("compile", CONFORMANCE / "errors" / "unknown_name.loss")
    assert p.returncode == 1
    assert "unknown_name.loss:4:12: error:" in p.stderr
    assert "Traceback" not in p.stderr
    assert "^" in p.stderr


def test_missing_file_and_bad_dim():
    code, out = run("compile", "nope.loss")
    assert code != 0 and "Traceback" not in out
    code, out = run("graph", SAMPLES / "logistic.loss", "--dim", "D=x")
    assert code != 0 and "D" in out


def test_graph_text_dot_after_and_stats():
    code, out = run("graph", SAMPLES / "mlp.loss")
    assert code == 0 and "param W1" in out and "grad.W1" in out and "# 10:" in out
    code, out = run("graph", SAMPLES / "mlp.loss", "--after", "build")
    assert code == 0 and "grad." not in out and "outputs:\n  loss = %" in out
    code, out = run("graph", SAMPLES / "mlp.loss", "--after", "cse")
    assert code == 0 and "grad.W1 = %" in out
    code, out = run("graph", SAMPLES / "mlp.loss", "--after", "nonsense")
    assert code == 1 and "unknown pass" in out
    code, out = run("graph", SAMPLES / "mlp.loss", "--format", "dot")
    assert code == 0 and out.startswith("digraph") and "->" in out
    code, out = run("graph", CONFORMANCE / "chain20.loss", "--stats")
    assert code == 0 and "expanded expression tree" in out
    tree = int(out.split("expanded expression tree: ")[1].split()[0].replace(",", ""))
    assert tree > 1_000_000


def test_graph_latex():
    code, out = run("graph", SAMPLES / "seed.loss", "--format", "latex")
    assert code == 0, out
    assert r"\frac{\partial \ell}{\partial x_{1}}" in out and r"\sin" in out


def test_ir_raw_optimized_and_asm():
    p = subprocess_run("ir", SAMPLES / "logistic.loss", "--raw")
    assert p.returncode == 0 and "define i32 @\"lossc_value_and_grad\"" in p.stdout
    code, out = run("ir", SAMPLES / "logistic.loss")
    assert code == 0 and "lossc_value_and_grad" in out
    code, out = run("ir", SAMPLES / "logistic.loss", "--asm")
    assert code == 0 and "lossc_value_and_grad:" in out and "lossc_train_steps_adam:" in out
    code, out = run("ir", SAMPLES / "logistic.loss", "--raw", "--unit", "loss")
    assert code == 0 and "lossc_loss" in out and "lossc_value_and_grad" not in out


def test_help_explains_each_command():
    for cmd in ("compile", "graph", "ir", "check"):
        code, out = run(cmd, "--help")
        assert code == 0 and "Usage:" in out and len(out) > 200


def test_cache_command_lists_and_clears(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path / "c"))
    lossc.compile("param a = 1\nloss = a ^ 2\n")
    code, out = run("cache")
    assert code == 0 and "1 cached artifact," in out and str(tmp_path / "c") in out
    code, out = run("cache", "--clear")
    assert code == 0 and "removed 1" in out
    assert not list((tmp_path / "c").glob("*.lossc"))
