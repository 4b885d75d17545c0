"""`lossc graph --format latex` (lossc/ir/latex.py): every op has a form, the forms
mean what the reference interpreter computes, and the work sympy is given is bounded."""
import json
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from conftest import CONFORMANCE, ROOT
from lossc.cli import main
from lossc.compiler import compile_source
from lossc.ir import latex
from lossc.ir.evaluate import evaluate
from lossc.ir.ops import OPS

# the ops no conformance model reaches
LOGIC_AND_INTEGERS = """dim K = 3
input x[K]
input k: int
param w[K] = 0.5
c = where(x[0] < 1 and not (x[1] != 2) or x[2] > 0, 1, 2)
loss = sum(softmax(w * x)) * c + log_softmax(w)[1] + w[-(-(k * 2)) - k + 0] + log_sigmoid(w[0])
"""
LOGIC_POINT = {"params": {"w": [0.3, -1.2, 0.8]}, "inputs": {"x": [[0.5, 2.0, -1.0]], "k": [2]}}
# the special functions (digamma's derivative is trigamma), an array literal
SPECIAL = """input y
param a = 2.5
param b = 0.7
loss = lgamma(a * y) + digamma(b) + erfc(a - y) + xlogy(y, b) + xlogy(0 * y, a) + dot([a, b], [1, y])
"""
SPECIAL_POINT = {"params": {"a": 2.5, "b": 0.7}, "inputs": {"y": [1.5]}}
# a gather by an int vector input (its adjoint scatters)
GATHER = """input t[3]: int
param v[4] = 0.5
loss = sum(v[t] * [1, 2, 3])
"""
GATHER_POINT = {"params": {"v": [0.3, -1.2, 0.8, 2.0]}, "inputs": {"t": [[2, 0, 2]]}}
# ops that only second derivatives make (trigamma's derivative): checked on their own
SECOND_ORDER_ONLY = {"polygamma2"}


def cases():
    """(name, source, params, one sample) for every conformance model LaTeX covers."""
    out = [("logic and integers", LOGIC_AND_INTEGERS, LOGIC_POINT["params"],
            {k: v[0] for k, v in LOGIC_POINT["inputs"].items()}, {}),
           ("special functions", SPECIAL, SPECIAL_POINT["params"],
            {k: v[0] for k, v in SPECIAL_POINT["inputs"].items()}, {}),
           ("gather", GATHER, GATHER_POINT["params"],
            {k: v[0] for k, v in GATHER_POINT["inputs"].items()}, {})]
    for path in sorted(CONFORMANCE.glob("*.json")):
        c = json.loads(path.read_text())
        if c["model"] == "chain20.loss":        # too large: see the bound tests
            continue
        source = (CONFORMANCE / c["model"]).read_text()
        out.append((c["model"], source, c["params"],
                    {k: v[0] for k, v in c["inputs"].items()}, c["dims"]))
    return out


def graph_of(source, dims=None):
    return compile_source(source, dims or None, until="autodiff").graph


def numeric(expr, values: dict) -> float:
    """expr at the point `values` (symbol -> number), its unevaluated functions too."""
    e = expr.subs(values)
    for kind, f in latex._ARG_EXTREME.items():
        pick = np.argmax if kind == "max" else np.argmin
        e = e.replace(f, lambda *a, pick=pick: sp.Integer(int(pick([float(v) for v in a]))))
    e = e.replace(latex.Max, lambda *a: sp.Max(*a)).replace(latex.Min, lambda *a: sp.Min(*a))
    return float(e)


def test_the_test_models_reach_every_op():
    """Every op's form (its `sympy` fact, which tests/test_ops.py requires) is checked
    below against the reference interpreter; the lower pass's ops, which appear only
    after autodiff, by tests/test_lower.py."""
    reached = set()
    for _, source, _, _, dims in cases():
        reached |= {n.op for n in graph_of(source, dims).nodes}
    assert reached == {name for name, d in OPS.items() if d.stage != "lower"} \
        - SECOND_ORDER_ONLY


def test_the_form_of_polygamma2():
    from types import SimpleNamespace
    form = OPS["polygamma2"].sympy(SimpleNamespace(sp=sp), None, sp.Float(0.7))
    assert float(form) == pytest.approx(OPS["polygamma2"].eval({}, 0.7), rel=1e-13)


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_the_forms_compute_what_the_reference_interpreter_does(case):
    """The loss and every gradient component, as sympy expressions evaluated at a point,
    against the reference interpreter on the same graph."""
    name, source, params, sample, dims = case
    graph = graph_of(source, dims)
    params = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    hypers = {h.name: h.default for h in graph.hypers}
    values = {}
    for n in graph.nodes:
        if n.op in ("param", "input"):
            given = (params if n.op == "param" else sample)[n.attr("name")]
            values.update(zip(latex._symbols(n.attr("name"), n.shape).reshape(-1),
                              np.asarray(given).reshape(-1).tolist()))
        elif n.op == "hyper":
            values[sp.Symbol(n.attr("name"))] = hypers[n.attr("name")]
    names, exprs = latex.symbolic(graph)
    want = [float(evaluate(graph, params, sample, hypers))]
    for key in graph.outputs:
        if key != "loss":
            want += np.asarray(evaluate(graph, params, sample, hypers, key)).reshape(-1).tolist()
    got = [numeric(e, values) for e in exprs]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_max_reduction_prints_with_argmax():
    text = latex.to_latex(graph_of("input x[3]\nparam w[3]\nloss = max(w * x) + min(w)\n"))
    assert r"\max\left(t_{0}, t_{1}, t_{2}\right)" in text
    assert r"\operatorname{argmax}" in text and r"\operatorname{argmin}" in text


def test_shared_terms_are_not_named_like_a_parameter():
    """int_arith.loss has a parameter t (t_{0}, t_{1}, ...): the shared terms take tt."""
    text = latex.to_latex(graph_of((CONFORMANCE / "int_arith.loss").read_text()))
    assert r"tt_{0} &=" in text
    assert not any(line.strip().startswith("t_{") for line in text.splitlines())


@pytest.mark.parametrize("name, printed", [
    ("x", "x"), ("w1", "w_{1}"), ("w_1", "w_{1}"), ("alpha", r"\alpha"),
    ("Sigma", r"\Sigma"), ("x_val", r"x_{\mathit{val}}"),
    ("my_bias", r"\mathit{my}_{\mathit{bias}}"), ("lambda_", r"\mathit{lambda\_}"),
    ("a_b_c", r"\mathit{a\_b\_c}"), ("xbar", r"\mathit{xbar}"), ("xdot", r"\mathit{xdot}"),
    ("_w", r"\mathit{\_w}"), ("w2_3", r"\mathit{w2\_3}"),
])
def test_names_print_as_written(name, printed):
    """sympy reads a_b_c as a with subscripts b and c, lambda_ with an empty subscript,
    xbar as x with a bar: the equations show a model's names as written."""
    assert latex.latex_name(name) == printed
    text = latex.to_latex(graph_of(f"param {name}[2]\ninput x[2]\nloss = sum({name} * x)\n"
                                   if name != "x" else "param x[2]\nloss = sum(x ^ 2)\n"))
    element = ("{" + printed + "}" if "_" in printed else printed) + "_{1}"
    assert r"\frac{\partial \ell}{\partial " + element + "}" in text, text
    assert element + " " in text or element + "^" in text, text


@pytest.mark.parametrize("source, apart", [
    ("param x1 = 2\nparam x_1 = 3\nloss = x1 * x_1\n", [r"\mathit{x1}", r"\mathit{x\_1}"]),
    ("param w[2] = 1\nparam w1 = 3\nloss = w1 * w[1] + w[0]\n",
     [r"\mathit{w1}", r"\mathit{w}_{1}"]),
    ("param ell = 1\nparam y = 2\nloss = ell * y\n", [r"\mathit{ell}"]),
    ("param rho = 2\nparam a = 1\nloss = rho * a\npenalty = a ^ 2\n", [r"\mathit{rho}"]),
])
def test_names_that_would_print_alike_are_printed_as_written(source, apart):
    """x1 and x_1 both printed x_{1}, the parameter w1 as the element w[1], and a
    parameter ell or rho as the loss or the penalty: equations and gradient headers
    that named two things alike."""
    text = latex.to_latex(graph_of(source))
    headers = [line.split("&=")[0] for line in text.splitlines() if "&=" in line]
    assert len(headers) == len(set(headers)), text
    for name in apart:
        assert r"{\partial " + name + "}" in text, text
    assert r"\frac{\partial \ell}{\partial \ell}" not in text
    assert r"\frac{\partial \rho}{\partial \rho}" not in text


def test_a_name_is_printed_as_written_only_where_it_collides():
    """rho is the penalty's symbol only in a model with a penalty."""
    text = latex.to_latex(graph_of("param rho = 2\nparam a = 1\nloss = rho * a\n"))
    assert r"{\partial \rho}" in text and "mathit{rho}" not in text, text


def chain(steps: int) -> str:
    lines = ["param a0 = 0.5"] + [f"a{i + 1} = sin(a{i}) * a{i}" for i in range(steps)]
    return "\n".join(lines + [f"loss = a{steps}"]) + "\n"


def test_a_chain_whose_gradient_swells_is_refused_in_a_line(tmp_path):
    """The gradient of 14 steps a{i+1} = sin(a{i}) * a{i}, written out as trees, has
    tens of millions of nodes (sympy.cse took minutes over it): refused at the step
    where the measure passes the bound, before sympy's work."""
    path = tmp_path / "chain.loss"
    path.write_text(chain(14))
    p = subprocess.run([sys.executable, "-m", "lossc.cli", "graph", path, "--format", "latex"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 1 and p.stdout == ""
    (line,) = p.stderr.splitlines()
    assert line.startswith("lossc: error: the loss and gradient are too large for LaTeX")
    assert f"(at most {latex.MAX_TREE_WORK:,})" in line and "--format text" in line


def test_a_short_chain_is_within_the_bounds():
    text = latex.to_latex(graph_of(chain(6)))
    assert text.count(r"\frac{\partial \ell}{\partial a_{0}}") == 1


@pytest.mark.parametrize("model, words", [
    ("param a = 0.5\nloss = " + "sin(" * 1000 + "a" + ")" * 1000 + "\n",
     ["nested", "levels deep", "line 2:"]),
    ("param A[20, 20]\nparam B[20, 20]\nloss = sum(A @ B @ A)\n", ["operands"]),
])
def test_deep_or_wide_models_are_refused_in_a_line(tmp_path, model, words):
    path = tmp_path / "m.loss"
    path.write_text(model)
    r = CliRunner().invoke(main, ["graph", str(path), "--format", "latex"])
    assert r.exit_code == 1, r.output
    (line,) = r.output.splitlines()
    assert line.startswith("lossc: error: the loss and gradient are too large"), line
    assert all(w in line for w in words), line
