"""Array literals (constant, and built from scalar expressions with the gradient flowing
to each element) and shaped hypers (defaults, call-time arrays of exactly their shape)."""
import numpy as np
import pytest

import lossc
from conftest import assert_compile_error
from lossc.compiler import compile_source
from lossc.ir.evaluate import objective
from lossc.ir.spec import Signature


def test_literals_built_from_params_pass_the_gradient_to_each_element():
    src = ("input x[2]\nparam a\nparam c\nm = a * c\n"
           "R = [[a, -c], [m, 1]]\nloss = sum(R @ x) + dot([a, c, m], [1, -2, 0.5])\n")
    m = lossc.compile(src)
    x = np.array([[1.0, 2.0], [-0.5, 3.0], [2.0, 0.0]])
    a, c = 0.7, -1.3
    value, grads = m.value_and_grad({"a": a, "c": c}, x=x)
    R = np.array([[a, -c], [a * c, 1]])
    per = (x @ R.T).sum(axis=1) + a - 2 * c + 0.5 * a * c
    assert value == pytest.approx(per.mean(), rel=1e-14)
    x0, x1 = x[:, 0].mean(), x[:, 1].mean()
    assert grads["a"] == pytest.approx(x0 + c * x0 + 1 + 0.5 * c, rel=1e-14)
    assert grads["c"] == pytest.approx(-x1 + a * x0 - 2 + 0.5 * a, rel=1e-14)
    graph = compile_source(src).stages["build"]
    assert objective(graph, {"a": a, "c": c}, {"x": x}) == pytest.approx(value, rel=1e-14)


def test_a_constant_literal_indexed_by_data():
    m = lossc.compile("input k: int\nparam w\nloss = w * [0.5, -1, 4][k] + [[1, 2], [3, 4]][k, 1]\n")
    value, grads = m.value_and_grad({"w": 2.0}, k=np.array([0, 1, 1]))
    assert value == pytest.approx(np.mean([1 + 2, -2 + 4, -2 + 4]), rel=1e-14)
    assert grads["w"] == pytest.approx(np.mean([0.5, -1, -1]), rel=1e-14)
    # [[1, 2], [3, 4]][k, 1] with k = 2 is out of range: an index error at run time
    with pytest.raises(ValueError, match="out of range 0..1 at sample 2"):
        m.value_and_grad({"w": 2.0}, k=np.array([0, 1, 2, 1]))


@pytest.mark.parametrize("source, line, col, words", [
    ("param w\nC = [[1, 2, 3], [4, 5]]\nloss = w * sum(C)\n", 2, 5,
     ["same length", "row 2 has 2", "row 1 has 3"]),
    ("param w\nloss = w * sum([[[1]]])\n", 2, 18, ["no deeper than a matrix"]),
    ("param w\nloss = w * sum([[1], 2])\n", 2, 22, ["rows"]),
    ("param w[2]\nloss = sum([w, 1])\n", 2, 13, ["real scalars", "f64[2]"]),
    ("param w\nloss = sum([w > 1, 1])\n", 2, 13, ["real scalars", "bool"]),
    ("param w\nloss = w * sum([])\n", 2, 17, ["at least one element"]),
    ("param w\nloss = w * sum([1, 2)\n", 2, 21, ["']'"]),
])
def test_literal_errors(source, line, col, words):
    assert_compile_error(source, line, col, words)


@pytest.mark.parametrize("source, line, col, value", [
    ("param p = 1e39\nloss = p\n", 1, 7, "1e+39"),
    ("param w[2] = uniform(-1e39, 1)\nloss = sum(w)\n", 1, 7, "-1e+39"),
    ("param w = normal(0, 1e300)\nloss = w\n", 1, 7, "1e+300"),
    ("param w\nhyper h[2] = [1, -4e38]\nloss = w * sum(h)\n", 2, 7, "-4e+38"),
])
def test_a_declared_value_beyond_float32_is_refused_in_a_float32_model(source, line, col,
                                                                        value):
    """It would be inf (initial values) or make the hyper inf: load_params refuses the
    same values in a parameter file. A float64 model takes them, and a float32 model
    every value that rounds to a float32 number."""
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(source, dtype="float32", cache=False)
    e = info.value
    assert (e.line, e.col) == (line, col) and value in e.message and "float32" in e.message
    m = lossc.compile(source, cache=False)
    assert all(np.all(np.isfinite(v)) for v in m.init_params().values())
    for v in ("3.4e38", "3.4028235e38"):     # (the second, FLT_MAX as NumPy prints it)
        assert lossc.compile(f"param p = {v}\nloss = p\n", dtype="float32",
                             cache=False).init_params()["p"] == np.float32(float(v))


SHAPED = """dim K = 3
input y: int
param c[K]
hyper cw[K] = [1.0, 2.0, 0.5]
hyper shift[K] = -0.25
hyper M[2, K] = [[1, 0, 0], [0, 1, 1]]
hyper lam = 0.1
loss = cw[y] * (c[y] + shift[y]) ^ 2 + sum(M @ c)
penalty = lam * sum(c ^ 2)
"""


def _shaped_expected(c, y, cw, shift, M, lam):
    per = cw[y] * (c[y] + shift[y]) ** 2 + np.sum(M @ c)
    grad = np.zeros(3)
    np.add.at(grad, y, 2 * cw[y] * (c[y] + shift[y]))
    return per.mean() + lam * np.sum(c ** 2), grad / len(y) + M.sum(axis=0) + 2 * lam * c


def test_shaped_hypers_defaults_and_call_time_arrays():
    m = lossc.compile(SHAPED)
    assert [(h.name, h.shape) for h in m.hypers] == [("cw", (3,)), ("shift", (3,)),
                                                      ("M", (2, 3)), ("lam", ())]
    c, y = np.array([0.5, -1.0, 2.0]), np.array([0, 2, 1, 2])
    cw, shift = np.array([1.0, 2.0, 0.5]), np.full(3, -0.25)
    M = np.array([[1.0, 0, 0], [0, 1, 1]])
    value, grads = m.value_and_grad({"c": c}, y=y)
    want, dc = _shaped_expected(c, y, cw, shift, M, 0.1)
    assert value == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(grads["c"], dc, rtol=1e-14)
    cw2, M2 = np.array([3.0, 0.5, 1.5]), np.arange(6.0).reshape(2, 3)
    value, grads = m.value_and_grad({"c": c}, y=y, cw=cw2, M=M2, lam=0.0)
    want, dc = _shaped_expected(c, y, cw2, shift, M2, 0.0)
    assert value == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(grads["c"], dc, rtol=1e-14)
    # a list is taken as an array; an integer array converts
    assert m.loss({"c": c}, y=y, cw=[3.0, 0.5, 1.5], M=M2.astype(int), lam=0) == \
        pytest.approx(want, rel=1e-14)
    graph = compile_source(SHAPED).stages["build"]
    assert objective(graph, {"c": c}, {"y": y}, {"cw": cw2, "M": M2, "lam": 0.0}) == \
        pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("value", [2.0, np.ones(2), np.ones((1, 3)), np.ones((4, 3)),
                                   np.array(["a", "b", "c"])])
def test_a_shaped_hyper_takes_only_its_shape(value):
    m = lossc.compile(SHAPED)
    with pytest.raises(ValueError, match=r"hyperparameter 'cw' must be a real array of "
                                         r"shape \(3,\)"):
        m.value_and_grad({"c": np.zeros(3)}, y=np.array([0]), cw=value)


def test_the_signature_keeps_shaped_hypers():
    m = lossc.compile(SHAPED)
    sig = m.signature
    assert Signature.from_json(sig.to_json()) == sig


@pytest.mark.parametrize("source, line, col, words", [
    ("param w\nhyper h[3] = [1, 2]\nloss = w * sum(h)\n", 2, 14, ["shape [2]", "[3]"]),
    ("param w\nhyper h = [1, 2]\nloss = w * h\n", 2, 11, ["scalar", "needs a shape"]),
    ("param w\nhyper h[2, 2] = [[1, 2], [3]]\nloss = w * sum(h)\n", 2, 17, ["ragged"]),
    ("param w\nhyper h[2]\nloss = w * sum(h)\n", 2, 10, ["needs a default"]),
    ("param w\nhyper h[2] = [1, w]\nloss = w * sum(h)\n", 2, 18, ["number"]),
    ("param w\nhyper h[2] = [[[1]]]\nloss = w * sum(h)\n", 2, 16, ["no deeper"]),
])
def test_shaped_hyper_errors(source, line, col, words):
    assert_compile_error(source, line, col, words)


def test_the_command_line_sets_shaped_hypers_as_array_literals(tmp_path):
    """--hyper took numbers only ("cw must be a finite number, got '1,2,3'"): a shaped
    hyper is written as the .loss file writes its literal, nested for a matrix, and
    checked against its shape; the objective is the one Python computes with them."""
    from click.testing import CliRunner
    from lossc.cli import main
    (tmp_path / "m.loss").write_text(SHAPED)
    np.savez(tmp_path / "d.npz", y=np.array([0, 2, 1, 2]))
    np.savez(tmp_path / "p.npz", c=np.array([0.5, -1.0, 2.0]))

    def run(*hypers):
        args = ["eval", tmp_path / "m.loss", "--params", tmp_path / "p.npz", "--data",
                tmp_path / "d.npz"] + [a for h in hypers for a in ("--hyper", h)]
        return CliRunner().invoke(main, [str(a) for a in args])
    r = run("cw=[2, 0.5, 1e-1]", "M=[[0, 1, 0], [1, 0, -1]]", "lam=0.5")
    assert r.exit_code == 0, r.output
    want, _ = _shaped_expected(np.array([0.5, -1.0, 2.0]), np.array([0, 2, 1, 2]),
                               np.array([2, 0.5, 0.1]), np.full(3, -0.25),
                               np.array([[0, 1, 0], [1, 0, -1.0]]), 0.5)
    assert f"objective {want:.10g} on 4 samples" in r.output, r.output
    for value, words in [("[1, 2]", "must be a real array of shape (3,)"),
                         ("[1, nan, 2]", "a bracketed list of them"),
                         ("[[1], [2, 3]]", "a bracketed list"), ("[]", "a bracketed list"),
                         ("[1, true, 2]", "a bracketed list"), ("1,2,3", "a bracketed list")]:
        r = run(f"cw={value}")
        assert r.exit_code == 1 and words in r.output, (value, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
