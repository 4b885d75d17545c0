"""`penalty = EXPR`: added once to the objective of every call, under either reduction,
in a model with inputs or without, natively, threaded and in the reference interpreter;
the errors around it."""
import numpy as np
import pytest

import lossc
from conftest import assert_compile_error
from lossc.compiler import compile_source
from lossc.ir.evaluate import objective

SOURCE = """input x
param w = 2
param v[3] = 0.5
hyper lam = 0.5
{reduce}
loss = (w * x - 1) ^ 2 + 0.1 * w
penalty = lam * w ^ 2 + exp(w) + sum(v ^ 2) / 3
"""


def _expected(x, w, v, lam, reduce):
    per = (w * x - 1) ** 2 + 0.1 * w
    dper = 2 * (w * x - 1) * x + 0.1
    agg, dagg = (per.sum(), dper.sum()) if reduce == "sum" else (per.mean(), dper.mean())
    pen = lam * w ** 2 + np.exp(w) + np.sum(v ** 2) / 3
    return agg + pen, dagg + 2 * lam * w + np.exp(w), 2 * v / 3


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("B", [1, 7, 40])
def test_the_penalty_counts_once(reduce, B):
    src = SOURCE.format(reduce="reduce sum" if reduce == "sum" else "")
    m = lossc.compile(src)
    x = np.linspace(-1, 2, B)
    theta = {"w": 1.5, "v": np.array([0.1, -2.0, 3.0])}
    value, grads = m.value_and_grad(theta, x=x, lam=0.25)
    want, dw, dv = _expected(x, 1.5, theta["v"], 0.25, reduce)
    assert value == pytest.approx(want, rel=1e-14)
    assert grads["w"] == pytest.approx(dw, rel=1e-14)
    np.testing.assert_allclose(grads["v"], dv, rtol=1e-14)
    assert m.loss(theta, x=x, lam=0.25) == pytest.approx(want, rel=1e-14)
    graph = compile_source(src).stages["build"]
    assert objective(graph, theta, {"x": x}, {"lam": 0.25}) == pytest.approx(want, rel=1e-14)


def test_a_model_without_inputs_adds_loss_and_penalty():
    m = lossc.compile("param a = 3\nreduce sum\nloss = a ^ 2\npenalty = 2 * a\n")
    value, grads = m.value_and_grad({"a": 3.0})
    assert value == 15.0 and grads["a"] == 8.0


def test_threads_count_the_penalty_once():
    """Large batches are split across threads; under reduce sum each chunk's objective
    holds the penalty, and the batch's holds it once."""
    src = SOURCE.format(reduce="reduce sum")
    m = lossc.compile(src).set_threads(2)
    x = np.linspace(-1, 1, 2 * 16384 + 5)
    theta = {"w": 0.7, "v": np.array([0.1, -2.0, 3.0])}
    want, dw, dv = _expected(x, 0.7, theta["v"], 0.5, "sum")
    value, grads = m.value_and_grad(theta, x=x)
    assert value == pytest.approx(want, rel=1e-12)
    assert grads["w"] == pytest.approx(dw, rel=1e-12)
    np.testing.assert_allclose(grads["v"], dv, rtol=1e-12)
    assert m.loss(theta, x=x) == pytest.approx(want, rel=1e-12)


def test_a_parameter_only_the_penalty_uses_draws_no_warning():
    m = lossc.compile("input x\nparam w\nparam r = 1\nloss = (w - x) ^ 2\npenalty = r ^ 2\n")
    assert not any("does not affect" in w for w in m.warnings), m.warnings


@pytest.mark.parametrize("source, line, col, words", [
    ("input x\nparam w\nloss = w * x\npenalty = w * x\n", 4, 15, ["x", "input"]),
    ("input x\nparam w\nz = w * x\nloss = z\npenalty = 2 * z ^ 2\n", 5, 15,
     ["'z'", "input 'x'"]),
    ("param w[2]\nloss = sum(w)\npenalty = w\n", 3, 11, ["scalar"]),
    ("param w\nloss = w\npenalty = w\npenalty = 2 * w\n", 4, 1, ["penalty", "line 3"]),
    ("param w\nloss = w\npenalty = w > 1\n", 3, 11, ["number"]),
])
def test_penalty_errors(source, line, col, words):
    assert_compile_error(source, line, col, words)


def test_latex_shows_the_penalty():
    from lossc.ir.latex import to_latex
    text = to_latex(compile_source("param a = 2\nloss = a ^ 2\npenalty = 3 * a\n")
                    .stages["autodiff"])
    assert "\\rho" in text and "\\frac{\\partial \\rho}{\\partial a}" in text


@pytest.mark.parametrize("second", ["reduce mean", "reduce sum"])
def test_a_second_reduce_is_an_error_not_the_last_one_winning(second):
    """A file gives its reduction once, as it gives its loss and penalty once: with two,
    the last silently decided between the sum and the mean."""
    source = f"input x\nparam w\nreduce sum\nloss = (w * x) ^ 2\n{second}\n"
    assert_compile_error(source, 5, 1, ["reduction is already given at line 3",
                                        "'reduce sum'", "at most one 'reduce'"])
