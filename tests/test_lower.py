"""The lower pass (passes/lower.py): each rule where it applies and where it does not,
`lossc graph --after lower`, the verifier on the lowered ops, their LaTeX forms, and
the loss function lowered for its own outputs. The lowered code against the plain code
over the sweep's sizes, and the reference interpreter on lowered graphs, are in
tests/test_sweep.py (sweep.check_lowered_against_plain)."""
import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

import sweep
from lossc.cli import main
from lossc.codegen.units import lowered
from lossc.compiler import compile_source
from lossc.ir import latex
from lossc.ir.graph import REAL, Node
from lossc.ir.ops import OPS
from lossc.ir.verify import VerifyError, verify
from lossc.passes import Target, lower_for

# one scalar z under softplus, log_sigmoid (log(sigmoid(z)) rewritten) and, in the
# gradient, sigmoid(z) and sigmoid(-z): one exponential for the four
# a table used only through gathers, by an int and an int vector (row_scatter)
ROWS = """dim V = 6
input u: int
input tok[3]: int
param E[V, 2] = normal(0, 1)
loss = sum(E[u] * sum(E[tok], axis=0))
"""
STABLE = """input x
param a = 0.5
t = a * x
loss = softplus(t) - log(sigmoid(t))
"""


def family(name: str, **sizes) -> str:
    return sweep.FAMILIES[name].text(sizes)


def lower_ops(graph) -> set:
    """The lower pass's ops in a graph, outer_grad with its kind."""
    return {f"{n.op}.{n.attr('kind')}" if n.op == "outer_grad" else n.op
            for n in graph.nodes if OPS[n.op].stage == "lower"}


# tanh and its derivative from one expm1(2|z|), in every layer of the `layer` family
TANH = {"expm1_2abs", "tanh_e", "sech2_e"}


@pytest.mark.parametrize("source, dtype, bits, expected", [
    # dot(w, x) of an input row; the gradient s * x by the row kernel; softplus(z) and
    # its derivative sigmoid(z) share exp(-|z|)
    (family("dot", D=8), "float64", 512,
     {"row_dot", "outer_grad.rows", "exp_neg_abs", "softplus_e", "sigmoid_e"}),
    (family("dot", D=16), "float32", 512,
     {"row_dot", "outer_grad.rows", "exp_neg_abs", "softplus_e", "sigmoid_e"}),
    # one lane: no vector loop, so no row or outer-product kernel
    (family("dot", D=8), "float64", 64, {"exp_neg_abs", "softplus_e", "sigmoid_e"}),
    # a row shorter than a vector is transposed instead
    (family("dot", D=7), "float64", 512, {"exp_neg_abs", "softplus_e", "sigmoid_e"}),
    # W @ x along rows of ROW_MATVEC_CHUNKS vectors or more; its gradient outer(u, x)
    # (64 elements) by the row kernel; tanh(W @ x + b) and its derivative share
    # expm1(2|W @ x + b|)
    (family("layer", H=2, D=32), "float64", 512,
     TANH | {"row_matvec", "outer_grad.rows"}),
    (family("layer", H=2, D=24), "float64", 512, TANH),
    (family("layer", H=2, D=24), "float64", 256, TANH | {"row_matvec"}),
    # W @ x as a block product from BLOCK_MIN_OUTPUTS rows, or from BLOCK_MIN_ELEMENTS
    # elements with BLOCK_MIN_ROWS rows
    (family("layer", H=64, D=8), "float64", 512,
     TANH | {"block_matmul", "outer_grad.rows"}),
    (family("layer", H=63, D=32), "float64", 512,
     TANH | {"row_matvec", "outer_grad.rows"}),
    (family("layer", H=16, D=1024), "float32", 512,
     TANH | {"block_matmul", "outer_grad.rows"}),
    (family("layer", H=16, D=1023), "float32", 512,
     TANH | {"row_matvec", "outer_grad.rows"}),
    (family("layer", H=15, D=1200), "float64", 256,
     TANH | {"row_matvec", "outer_grad.rows"}),
    (family("layer", H=64, D=8), "float64", 64, TANH),
    # x @ A as a block product; its gradient outer(x, g) of 108 elements, g computed:
    # the block kernel
    (family("vecmat", D=9, H=12), "float64", 512, {"block_matmul", "outer_grad.block"}),
    (family("vecmat", D=8, H=1), "float64", 512, {"block_matmul"}),
    (family("vecmat", D=5, H=12), "float64", 512, set()),
    (family("vecmat", D=9, H=12), "float64", 64, set()),
    # logsumexp with its softmax: once in the scalar loop too; too long to unroll: not
    (family("softmax", K=3, D=2), "float64", 64, {"logsumexp_softmax"}),
    (family("softmax", K=257, D=1), "float64", 64, set()),
    (STABLE, "float64", 256,
     {"exp_neg_abs", "softplus_e", "log_sigmoid_e", "sigmoid_e"}),
])
def test_each_rule_where_it_applies_and_not_elsewhere(source, dtype, bits, expected):
    graph = compile_source(source, check=True).graph
    low = lower_for(graph, Target.of(dtype, bits), check=True)
    assert lower_ops(low) == expected


def test_one_exponential_serves_every_use_of_z_and_minus_z():
    low = lower_for(compile_source(STABLE).graph, Target.of("float64", 64))
    (e,) = [n for n in low.nodes if n.op == "exp_neg_abs"]
    users = [n for n in low.nodes if e in n.inputs]
    assert sorted(n.op for n in users) == ["log_sigmoid_e", "sigmoid_e", "sigmoid_e",
                                           "softplus_e"]
    assert not any(n.op in ("exp", "sigmoid", "softplus", "log_sigmoid") for n in low.nodes)


def test_a_lone_sigmoid_keeps_its_own_exponential():
    """Alone in the loss, sigmoid(z) is left as it is; its gradient's dsigmoid(z)
    (sigmoid' = sigmoid(z) sigmoid(-z)) shares one exp(-|z|) with it."""
    graph = compile_source("input x\nparam a\nloss = sigmoid(a * x)\n").graph
    target = Target.of("float64", 64)
    assert lower_ops(lowered(graph, False, target)) == set()
    low = lower_for(graph, target)
    assert lower_ops(low) == {"exp_neg_abs", "sigmoid_e", "dsigmoid_e"}
    assert sum(n.op == "exp_neg_abs" for n in low.nodes) == 1
    assert sum(n.op == "sigmoid_e" for n in low.nodes) == 1
    assert sum(n.op == "dsigmoid_e" for n in low.nodes) == 1


def test_the_loss_function_is_lowered_for_its_own_outputs():
    """The loss alone needs no softmax: lowered for the loss function, logsumexp stays
    a reduction instead of computing the softmax its gradient would take."""
    graph = compile_source(family("softmax", K=3, D=2)).graph
    target = Target.of("float64", 64)
    assert "logsumexp_softmax" in lower_ops(lowered(graph, True, target))
    loss_only = lowered(graph, False, target)
    assert lower_ops(loss_only) == set()
    assert "logsumexp" in {n.op for n in loss_only.nodes}
    assert set(loss_only.outputs) == {k for k in graph.outputs if k.startswith("loss.")}


def test_lossc_graph_after_lower_shows_the_fusions_for_the_width(tmp_path):
    path = tmp_path / "dot.loss"
    path.write_text(family("dot", D=8))
    runner = CliRunner()

    def graph(after, bits):
        r = runner.invoke(main, ["graph", str(path), "--after", after],
                          env={"LOSSC_VECTOR_BITS": str(bits)})
        assert r.exit_code == 0, r.output
        return r.output

    wide = graph("lower", 512)
    assert "= row_dot %" in wide and "= outer_grad %" in wide and "kind=rows" in wide
    assert "= exp_neg_abs %" in wide and "= softplus_e %" in wide
    assert "row_dot" not in graph("tidy", 512) and "exp_neg_abs" not in graph("tidy", 512)
    narrow = graph("lower", 64)
    assert "row_dot" not in narrow and "= exp_neg_abs %" in narrow


def test_lossc_graph_after_lower_shows_the_block_product(tmp_path):
    """A layer of 64 rows is a block product with lanes, a plain product without."""
    path = tmp_path / "layer.loss"
    path.write_text(family("layer", H=64, D=8))
    runner = CliRunner()
    shown = {}
    for bits in (512, 256, 64):
        r = runner.invoke(main, ["graph", str(path), "--after", "lower"],
                          env={"LOSSC_VECTOR_BITS": str(bits)})
        assert r.exit_code == 0, r.output
        shown[bits] = r.output
    assert "= block_matmul %" in shown[512] and "= block_matmul %" in shown[256]
    assert "block_matmul" not in shown[64] and "= matmul %" in shown[64]


def test_lossc_graph_names_a_bad_vector_width_in_a_line(tmp_path):
    path = tmp_path / "dot.loss"
    path.write_text(family("dot", D=8))
    r = CliRunner().invoke(main, ["graph", str(path), "--after", "lower"],
                           env={"LOSSC_VECTOR_BITS": "100"})
    assert r.exit_code == 1
    (line,) = r.output.splitlines()
    assert line.startswith("lossc: error: LOSSC_VECTOR_BITS"), line


def appended(graph, op: str, inputs: tuple, shape: tuple, **attrs):
    """The graph with one more node, made without the op's shape rule (as a faulty pass
    would)."""
    node = Node(max(n.id for n in graph.nodes) + 1, op, inputs, tuple(sorted(attrs.items())),
                shape, REAL, None)
    graph.nodes.append(node)
    return graph


@pytest.mark.parametrize("make", [
    # row_dot and outer_grad kind=rows read their x along an input's rows
    lambda g, w, x, u: appended(g, "row_dot", (w, w), ()),
    lambda g, w, x, u: appended(g, "outer_grad", (u, w), (8,), kind="rows"),
    lambda g, w, x, u: appended(g, "outer_grad", (u, x), (8,), kind="tiles"),
    lambda g, w, x, u: appended(g, "row_matvec", (w, x), (8,)),
    lambda g, w, x, u: appended(g, "block_matmul", (w, x), (8,)),
    lambda g, w, x, u: appended(g, "block_matmul", (x, u), (8,)),
    lambda g, w, x, u: appended(g, "logsumexp_softmax", (u,), (2,)),
    lambda g, w, x, u: appended(g, "logsumexp_softmax", (w,), (8,)),
])
def test_the_verifier_checks_the_lowered_ops(make):
    graph = lower_for(compile_source(family("dot", D=8)).graph, Target.of("float64", 512))
    verify(graph)
    by_name = {n.attr("name"): n for n in graph.nodes if n.op in ("param", "input")}
    u = next(n for n in graph.nodes if n.rank == 0 and n.op == "add")
    with pytest.raises(VerifyError, match="inputs do not fit|should be"):
        verify(make(graph, by_name["w"], by_name["x"], u))


def lower_op_nodes() -> dict:
    """A node of each of the lower pass's ops, from lowered models."""
    found = {}
    for source, bits in [(family("dot", D=8), 512), (family("layer", H=2, D=32), 512),
                         (family("layer", H=64, D=8), 512),
                         (family("vecmat", D=9, H=12), 512),
                         (family("softmax", K=3, D=2), 64), (STABLE, 64), (ROWS, 64),
                         ("input x\nparam a\nloss = sigmoid(a * x)\n", 64)]:
        for n in lower_for(compile_source(source).graph, Target.of("float64", bits)).nodes:
            if OPS[n.op].stage == "lower":
                found.setdefault(n.op, n)
    return found


def test_the_lowered_ops_forms_compute_what_their_eval_does():
    """Each lower-stage op's LaTeX form (its `sympy` fact) against its NumPy semantics
    on random operands (`e` of the `_e` forms in (0, 1], as exp(-|x|) is)."""
    nodes = lower_op_nodes()
    assert set(nodes) == {name for name, d in OPS.items() if d.stage == "lower"}
    rng = np.random.default_rng(0)
    for name, n in nodes.items():
        args = [rng.uniform(0.05, 1.0, i.shape) if k == 1 and name.endswith("_e")
                else rng.integers(0, n.shape[0], i.shape) if i.dtype != REAL
                else rng.normal(size=i.shape) for k, i in enumerate(n.inputs)]
        want = np.asarray(OPS[name].eval(dict(n.attrs), *args), dtype=float)
        exprs = latex.form(n, [np.vectorize(sp.Float, otypes=[object])(a) for a in args])
        got = np.vectorize(float)(np.asarray(exprs, dtype=object)).astype(float)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=name)
