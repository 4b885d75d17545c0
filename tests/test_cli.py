"""The command line, through click's runner and once per command as a real process."""
import os
import subprocess
import sys

import lossc
import pytest
from click.testing import CliRunner

from conftest import CONFORMANCE, ROOT, SAMPLES, drained_pipe
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


@pytest.mark.parametrize("option, values", [("--dim", ("D=3", "D=4")),
                                            ("--dim", ("D=3", " D=3"))])
def test_a_dim_given_twice_is_an_error_not_the_last_one_winning(option, values):
    code, out = run("graph", SAMPLES / "logistic.loss", option, values[0], option, values[1])
    assert code == 1 and out.strip().splitlines() == [
        f"lossc: error: --dim: D is given twice (D=3 and {values[1].strip()})"]


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


def test_graph_dot_takes_the_dtype_and_quotes_the_title(tmp_path):
    """--format dot labelled every value f64 whatever --dtype said, and wrote a file
    name holding a quote into the title unescaped (not DOT)."""
    src = tmp_path / 'we"ird\\name.loss'
    src.write_text((SAMPLES / "seed.loss").read_text())
    code, out = run("graph", src, "--format", "dot", "--dtype", "float32")
    assert code == 0 and out.startswith('digraph "we\\"ird\\\\name" {'), out[:80]
    assert "f32" in out and "f64" not in out


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


@pytest.mark.parametrize("args, words", [
    (("ir", "--raw", "--asm"), "--raw and --asm exclude each other"),
    (("graph", "--stats", "--format", "dot"), "takes no --format dot"),
    (("graph", "--stats", "--format", "latex"), "takes no --format latex"),
])
def test_flags_that_exclude_each_other_are_refused(args, words):
    """Each pair was taken without a word, the second flag ignored."""
    code, out = run(args[0], SAMPLES / "seed.loss", *args[1:])
    assert code == 1 and words in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize("args, words", [
    (("train", "seed.loss", "--lr", "abc"), "Invalid value for '--lr': 'abc' is not a number "
                                            "(see lossc train --help)"),
    (("train", "seed.loss", "--nope"), "No such option '--nope'"),
    (("trian", "seed.loss"), "No such command 'trian'"),
    (("train",), "Missing argument 'FILE'"),
    (("graph", "seed.loss", "--format", "xyz"), "Invalid value for '--format'"),
])
def test_usage_mistakes_are_one_line(args, words):
    """click showed its usage text, a hint and the error: four lines."""
    args = [str(SAMPLES / a) if a.endswith(".loss") else a for a in args]
    p = subprocess_run(*args)
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    assert p.stderr.startswith("lossc: error: ") and words in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_a_unit_named_twice_is_shown_once():
    """--unit is repeatable; a unit named twice made LLVM IR with a function defined
    twice, and a DuplicatedNameError traceback."""
    code, out = run("ir", SAMPLES / "seed.loss", "--raw", "--unit", "loss", "--unit", "loss")
    assert code == 0 and out.count('define i32 @"lossc_loss"') == 1, out[-500:]


@pytest.mark.parametrize("args", [("graph", "seed.loss"), ("check", "seed.loss"),
                                  ("ir", "seed.loss"), ("cache",), ("--version",),
                                  ("--help",)])
def test_output_that_cannot_be_written_is_a_one_line_error(args):
    """Standard output on a full disk (/dev/full): one line and status 1, as for a
    closed pipe, not an OSError traceback."""
    args = [str(SAMPLES / a) if a.endswith(".loss") else a for a in args]
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-c", "from lossc.cli import main; main()",
                            *args], stdout=full, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, timeout=120)
    assert p.returncode == 1, p.stderr
    assert p.stderr == "lossc: error: cannot write the output: No space left on device\n"


INTERRUPT_AT = """
import builtins, sys
{setup}
from lossc.__main__ import main
sys.argv = ["lossc", *sys.argv[1:]]
main()
"""
# a Ctrl-C while the commands are imported (the first import of lossc.cli)
INTERRUPT_IMPORT = """
real_import = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "lossc.cli":
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupted
"""
# ... and in the middle of a command (lossc graph printing the graph)
INTERRUPT_COMMAND = """
import lossc.ir.printer
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
lossc.ir.printer.format_graph = interrupted
"""


@pytest.mark.parametrize("setup", [INTERRUPT_IMPORT, INTERRUPT_COMMAND])
def test_a_ctrl_c_is_one_line_and_status_130_in_any_command(setup):
    """A Ctrl-C during start-up was a KeyboardInterrupt traceback from whichever
    import it fell in; during lossc predict, graph or check, click's "Aborted!" with
    status 1, where lossc train says "interrupted" with 130."""
    p = subprocess.run([sys.executable, "-c", INTERRUPT_AT.format(setup=setup), "graph",
                        str(SAMPLES / "seed.loss")], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip() == "lossc: interrupted" and p.stdout == ""


def test_the_demo_refuses_a_bad_setting_in_one_line():
    env = {**os.environ, "LOSSC_VECTOR_BITS": "7"}
    p = subprocess.run([sys.executable, "-m", "lossc.demo"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("lossc: error: LOSSC_VECTOR_BITS must be"), p.stderr


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


# ------------------------------------------------------------ outputs, limits, bad values

def limited_run(args, file_size=None, memory=None, env=None):
    """The command line in a subprocess (generous hang guard) with resource limits:
    file_size bytes per file written (a write past it fails with EFBIG, SIGXFSZ being
    ignored), memory bytes of address space."""
    import os
    import resource
    import signal

    def limit():
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run([sys.executable, "-m", "lossc.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          preexec_fn=limit, env=dict(os.environ, **(env or {})))


def one_line_error(p, *words):
    """A failed command's report: exit status 1, one line on stderr, no traceback."""
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    for w in words:
        assert w in p.stderr, p.stderr


def test_compile_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "m.loss"
    text = (SAMPLES / "seed.loss").read_text()
    src.write_text(text)
    one_line_error(subprocess_run("compile", src, "-o", src), "same file as FILE",
                   "refusing to overwrite")
    (tmp_path / "hard.lossc").hardlink_to(src)          # another name, the same file
    one_line_error(subprocess_run("compile", src, "-o", tmp_path / "hard.lossc"),
                   "same file")
    named = tmp_path / "n.lossc"                     # the default output is the input itself
    named.write_text(text)
    one_line_error(subprocess_run("compile", named), "same file")
    assert src.read_text() == text and named.read_text() == text


def test_compile_into_a_missing_folder_is_one_line(tmp_path):
    one_line_error(subprocess_run("compile", SAMPLES / "seed.loss", "-o",
                                  tmp_path / "nope" / "s.lossc"), "does not exist")


def test_compile_write_failure_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "s.lossc"
    p = subprocess_run("compile", SAMPLES / "seed.loss", "-o", out)   # warms the cache
    assert p.returncode == 0, p.stderr
    out.write_bytes(b"the old artifact")
    p = limited_run(["compile", SAMPLES / "seed.loss", "-o", out], file_size=4096)
    one_line_error(p, f"cannot write {out}", "File too large")
    assert out.read_bytes() == b"the old artifact"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["s.lossc"]   # no temporary left


def test_compile_write_failure_with_a_cold_cache_is_lines_of_lossc_s(tmp_path):
    """The cache write fails first (EFBIG too): Python's warning, with its file:line
    and source line, came before the error. Now the warning is lossc's one line, and
    the error the last line."""
    out = tmp_path / "s.lossc"
    p = limited_run(["compile", SAMPLES / "seed.loss", "-o", out], file_size=4096,
                    env={"LOSSC_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines == ["lossc: could not write the compile cache: [Errno 27] File too large",
                     f"lossc: error: cannot write {out}: File too large"], p.stderr


def test_compile_reports_cache_warnings_as_lines_of_its_own(tmp_path):
    """Saving without a usable cache folder (a file in its place): the artifact is
    written, unsigned, and the warning is lossc's one line, naming the file written
    (it named the temporary file .lossc-XXXX.tmp, gone by then)."""
    (tmp_path / "cache").write_text("not a folder")
    out = tmp_path / "s.lossc"
    p = limited_run(["compile", SAMPLES / "seed.loss", "-o", out],
                    env={"LOSSC_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == 0 and out.exists(), p.stderr
    assert f"lossc: {out} is not signed" in p.stderr and "warnings.warn" not in p.stderr, \
        p.stderr
    assert all(line.startswith("lossc: ") for line in p.stderr.splitlines()), p.stderr
    assert ".tmp" not in p.stderr, p.stderr


def test_compile_writes_through_a_symlink_and_into_a_pipe(tmp_path):
    import os
    import stat
    target = tmp_path / "real.lossc"
    target.write_bytes(b"old")
    (tmp_path / "link.lossc").symlink_to(target)
    p = subprocess_run("compile", SAMPLES / "seed.loss", "-o", tmp_path / "link.lossc")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "link.lossc").is_symlink() and lossc.load(target).params
    # a destination that is not a regular file is written, not replaced
    fifo = tmp_path / "pipe.lossc"
    os.mkfifo(fifo)
    reader, received, fd = drained_pipe(fifo)
    try:
        p = subprocess_run("compile", SAMPLES / "seed.loss", "-o", fifo)
        reader.join(timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert bytes(received) == target.read_bytes()


@pytest.mark.parametrize("value", ["abc", "3", "1024", "-1", "384", "256 "])
def test_vector_bits_must_be_a_vector_width(monkeypatch, value):
    monkeypatch.setenv("LOSSC_VECTOR_BITS", value)
    for read in (lossc.Options.from_env, lambda: lossc.compile("param a\nloss = a ^ 2\n")):
        with pytest.raises(ValueError, match="LOSSC_VECTOR_BITS must be 64, 128, 256 or 512"):
            read()
    one_line_error(limited_run(["check", SAMPLES / "seed.loss"],
                               env={"LOSSC_VECTOR_BITS": value}), "LOSSC_VECTOR_BITS")


def test_vector_bits_takes_each_width():
    for bits in (64, 128, 256, 512):
        assert lossc.Options.from_env({"LOSSC_VECTOR_BITS": str(bits)}).vector_bits == bits


@pytest.mark.parametrize("command", ["check", "train"])
def test_a_model_too_large_for_memory_is_refused_before_allocating(tmp_path, command):
    src = tmp_path / "big.loss"
    src.write_text("dim N = 1000000000000\nparam w[N]\nloss = sum(w ^ 2)\n")
    args = ["--steps", "2", "--out", tmp_path / "p.npz"] if command == "train" else []
    p = limited_run([command, src, *args], memory=8 << 30)
    one_line_error(p, "w[1000000000000] (dim N = 1000000000000) is too large",
                   "128,000.0 GB", "more than this machine's memory")


@pytest.mark.parametrize("command", ["check", "train"])
def test_a_model_whose_intermediate_values_exceed_memory_is_refused(tmp_path, command):
    """Small parameters, but an outer product of 50,000 x 50,000 values in the scratch
    space every call frame holds (it was a MemoryError traceback, or with enough
    address space a process the system kills)."""
    src = tmp_path / "outer.loss"
    src.write_text("dim N = 50000\nparam u[N] = normal(0, 1)\nparam v[N] = normal(0, 1)\n"
                   "loss = sum(tanh(outer(u, v)))\n")
    args = ["--steps", "2", "--out", tmp_path / "p.npz"] if command == "train" else []
    p = limited_run([command, src, *args], memory=8 << 30)
    one_line_error(p, "the model's intermediate values are too large (dim N = 50000)",
                   "scratch space 40.0 GB", "more than this machine's memory")


def test_a_check_batch_too_large_for_memory_is_refused():
    p = limited_run(["check", SAMPLES / "logistic.loss", "--batch", "100000000000"],
                    memory=8 << 30)
    one_line_error(p, "x[8] (dim D = 8) in a batch of 100,000,000,000 samples is too large")


@pytest.mark.parametrize("args, words", [
    (["--eps", "0"], ["--eps must be positive"]),
    (["--eps", "nan"], ["--eps must be a finite number"]),
    (["--rtol", "inf"], ["--rtol must be a finite number"]),
    (["--seed", "-5"], ["--seed must be >= 0"]),
    (["--hyper", "lam=nan"], ["--hyper: lam must be a finite number"]),
])
def test_check_option_values(args, words):
    one_line_error(subprocess_run("check", SAMPLES / "logistic.loss", *args), *words)
