"""Functions of the language, `def f(a, b) = expr`: inlined at each call and checked
there; the errors around them point into the body and name the call site."""
import subprocess
import sys

import numpy as np
import pytest

import lossc
from conftest import ROOT, assert_compile_error


def _error(source: str) -> lossc.CompileError:
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(source)
    return info.value


def test_a_function_on_scalars_and_vectors():
    m = lossc.compile("dim D = 3\ninput x[D]\nparam w[D]\nparam b\n"
                      "def sq(a) = a * a\ndef mean_of(a) = sum(a) / D\n"
                      "loss = sq(b - 1) + mean_of(sq(w * x))\n")
    x = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    theta = {"w": np.array([0.3, -0.2, 0.1]), "b": 0.25}
    value, grads = m.value_and_grad(theta, x=x)
    per = (0.25 - 1) ** 2 + np.sum((theta["w"] * x) ** 2, axis=1) / 3
    assert value == pytest.approx(per.mean(), rel=1e-14)
    np.testing.assert_allclose(grads["w"], np.mean(2 * theta["w"] * x ** 2 / 3, axis=0),
                               rtol=1e-14)
    assert grads["b"] == pytest.approx(2 * (0.25 - 1), rel=1e-14)


def test_an_integer_argument_indexes():
    m = lossc.compile("dim K = 3\ninput k: int\nparam z[K]\ndef pick(v, i) = v[i] * 2\n"
                      "loss = pick(z, k + 1)\n")
    value, grads = m.value_and_grad({"z": np.array([1.0, 2.0, 3.0])}, k=np.array([0, 1]))
    assert value == pytest.approx((4 + 6) / 2)
    np.testing.assert_array_equal(grads["z"], [0, 1, 1])


def test_argument_names_are_local_to_their_function():
    m = lossc.compile("param w = 2\ndef f(a) = a + 1\ndef g(a, b) = f(a) * b\n"
                      "loss = g(w, w) + f(3)\n")
    value, grads = m.value_and_grad({"w": 2.0})
    assert value == 6 + 4 and grads["w"] == pytest.approx(2 * 2 + 1)


def test_nested_calls_deeply():
    src = "param w = 1\ndef f(a) = a + 1\nloss = " + "f(" * 300 + "w" + ")" * 300 + "\n"
    assert lossc.compile(src).loss({"w": 1.0}) == 301.0


def test_an_unused_function_draws_no_warning():
    m = lossc.compile("param w\ndef f(a) = a\nloss = w ^ 2\n")
    assert m.warnings == []


def test_a_shape_error_inside_a_body_points_there_and_names_the_call():
    e = _error("dim D = 3\ninput x[D]\nparam v[2]\ndef f(a, b) = a + b\n"
               "loss = f(1, 2) + sum(f(x, v))\n")
    assert (e.line, e.col) == (4, 15), str(e)
    assert "cannot add f64[3] and f64[2]" in e.message
    assert "in the call of f() at line 5, col 22" in e.message


def test_an_error_two_calls_deep_names_both_calls():
    e = _error("param w\ndef f(a) = log(a, a)\ndef g(b) = f(b) * 2\nloss = g(w)\n")
    assert (e.line, e.col) == (2, 12), str(e)
    assert "f() at line 3, col 12" in e.message and "g() at line 4, col 8" in e.message


@pytest.mark.parametrize("source, line, col, words", [
    ("param w\ndef f(a, b) = a * b\nloss = f(w)\n", 3, 8, ["f()", "2 arguments", "(a, b)"]),
    ("param w\ndef f(a) = a\nloss = f(w, w)\n", 3, 8, ["1 argument", "got 2"]),
    ("param w\ndef f(a) = a + q\nloss = f(w)\n", 2, 16, ["unknown name 'q'", "'f'"]),
    ("param w\ndef f(a) = a + w\nloss = f(w)\n", 2, 16, ["param 'w'", "argument"]),
    ("param w\nloss = f(w)\ndef f(a) = a\n", 2, 8, ["before it is defined", "line 3"]),
    ("param w\ndef f(w) = w\nloss = f(w)\n", 2, 7, ["'w'", "param"]),
    ("param w\ndef f(a, a) = a\nloss = f(w, w)\n", 2, 10, ["twice"]),
    ("param w\ndef f(a) = a\nf = 2\nloss = w\n", 3, 1, ["already defined"]),
    ("param w\ndef w(a) = a\nloss = w\n", 2, 5, ["already defined"]),
    ("param w\ndef f(a) = a\nloss = f + w\n", 3, 8, ["function", "f(...)"]),
    ("param w\ndef f(a) = f(a)\nloss = f(w)\n", 2, 12, ["cannot call itself"]),
    ("param w\ndef f(a) = a\ndef f(b) = b\nloss = f(w)\n", 3, 5, ["already defined"]),
    ("param w\ndef exp(a) = a\nloss = w\n", 2, 5, ["built-in"]),
    ("param w\ndef f(a) = a\nloss = f(w, axis=0)\n", 3, 8, ["keyword argument"]),
])
def test_function_errors(source, line, col, words):
    assert_compile_error(source, line, col, words)


def test_a_function_whose_definition_failed_is_not_reported_again():
    e = _error("param w\ndef f(a) = a +\nloss = f(w) + f(w)\n")
    assert len(e.diagnostics) == 1 and e.line == 2, str(e)


def _doubling_chain(links: int) -> str:
    """f0 adds one; each further function applies the previous one twice, so the loss
    f{links-1}(x) = x + 2^(links-1) is that many additions once the calls are inlined."""
    lines = ["def f0(a) = a + 1"]
    lines += [f"def f{i}(a) = f{i - 1}(f{i - 1}(a))" for i in range(1, links)]
    return "\n".join(lines + ["param x = 1.0", f"loss = f{links - 1}(x)", ""])


def test_a_chain_of_doubling_calls_compiles_while_it_is_small():
    m = lossc.compile(_doubling_chain(6), cache=False)
    value, grads = m.value_and_grad({"x": 1.001})
    assert value == pytest.approx(1.001 + 2 ** 5, rel=1e-14)
    assert grads["x"] == pytest.approx(1.0, rel=1e-14)


def _in_a_subprocess(code: str) -> str:
    """What `code` prints, run in a new process with a time limit: a hang fails the
    test rather than stopping the suite."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_call_repeated_on_the_same_values_is_built_once():
    """g_i(a) = g_{i-1}(a) + g_{i-1}(a), forty links: each link calls the previous one
    twice on the same value, which is built once, so the program grows by a link, not
    twice (2^40 values inlined otherwise, past MAX_INLINED_VALUES). The sum doubles at
    each link, exactly. Calls on other values are built apart."""
    lines = ["def g0(a) = a + 1"]
    lines += [f"def g{i}(a) = g{i - 1}(a) + g{i - 1}(a)" for i in range(1, 40)]
    src = "\n".join(lines + ["param x = 1.0", "input y", "loss = g39(x * y)", ""])
    code = ("import lossc, numpy as np\n"
            f"m = lossc.compile({src!r}, cache=False)\n"
            "value, grads = m.value_and_grad({'x': 1.5}, y=np.array([2.0, 3.0]))\n"
            "print(value, grads['x'])\n")
    value, grad = map(float, _in_a_subprocess(code).split())
    assert (value, grad) == (2.0 ** 39 * (1.5 * 2.5 + 1), 2.0 ** 39 * 2.5)
    m = lossc.compile("def f(a) = a * a\nparam x = 1.0\ninput y\n"
                      "loss = f(x) + f(y) + f(x)\n", cache=False)
    value, grads = m.value_and_grad({"x": 3.0}, y=np.array([2.0]))
    assert (value, grads["x"]) == (22.0, 12.0)


def test_a_sum_used_twice_forty_times_over_compiles_at_once():
    """h_i = h_{i-1} + h_{i-1}, forty lines: the program is eighty values, but the sum
    as a sum of terms is 2^39 of them. Splitting the loss into its per-sample and
    once-per-call terms (passes/hoist.py) opens each sum once."""
    lines = ["param x = 1.0", "input y", "h0 = x * y + 1"]
    lines += [f"h{i} = h{i - 1} + h{i - 1}" for i in range(1, 40)]
    src = "\n".join(lines + ["loss = h39 + 0.5 * x ^ 2", ""])
    code = ("import lossc, numpy as np\n"
            f"m = lossc.compile({src!r}, cache=False)\n"
            "value, grads = m.value_and_grad({'x': 1.5}, y=np.array([2.0, 3.0]))\n"
            "print(value, grads['x'])\n")
    value, grad = map(float, _in_a_subprocess(code).split())
    assert value == pytest.approx(2.0 ** 39 * (1.5 * 2.5 + 1) + 0.5 * 1.5 ** 2, rel=1e-15)
    assert grad == pytest.approx(2.0 ** 39 * 2.5 + 1.5, rel=1e-15)


def test_a_chain_of_doubling_calls_past_the_bound_is_a_compile_error_not_a_hang():
    """Forty links would inline to 2^40 values: refused at the outermost call, once,
    in a subprocess that would otherwise run for ever."""
    code = ("import lossc, sys\n"
            f"src = {_doubling_chain(40)!r}\n"
            "try:\n    lossc.compile(src, cache=False)\n"
            "except lossc.CompileError as e:\n"
            "    print(e.line, e.col, str(e).count('error:'), e.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    line, col, errors, message = out.stdout.split(" ", 3)
    assert (int(line), int(col), int(errors)) == (42, 8, 1)
    assert "too large once its calls are inlined" in message


@pytest.mark.parametrize("source, col, words", [
    ("input k\nparam v[k]\nloss = sum(v)\n", 9, "'k' is an input"),
    ("output o = 1.0\nparam v[o]\nloss = sum(v)\n", 9, "'o' is an output"),
    ("z = 2.0\nparam v[z]\nloss = sum(v)\n", 9, "'z' is a binding"),
    ("hyper h = 2\nparam v[h]\nloss = sum(v)\n", 9, "'h' is a hyperparameter"),
])
def test_a_name_s_kind_is_named_with_its_article(source, col, words):
    """("'k' is a input", "'z' is a let")"""
    assert_compile_error(source, 2, col, [words])


@pytest.mark.parametrize("text, words", [
    ("[-1:-2]", "slice -1:-2 (2:1 on this axis) must lie inside an axis of size 3"),
    ("[-9:]", "slice -9: (-6:3 on this axis) must lie inside an axis of size 3"),
    ("[2:1]", "slice 2:1 must lie inside an axis of size 3")])
def test_a_slice_out_of_its_axis_is_named_as_written(text, words):
    """("slice 2:1" for -1:-2: the bounds after counting from the end, which the file
    does not hold)"""
    assert_compile_error(f"param v[3]\nloss = sum(v{text})\n", 2, 14, [words])
