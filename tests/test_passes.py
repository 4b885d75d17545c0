"""The pass pipeline: verifier between passes, CSE, folding, hoisting, stabilizing
rewrites, and the no-swell property of reverse mode."""

import numpy as np
import pytest

import lossc
from conftest import CONFORMANCE, SAMPLES
from lossc.compiler import compile_source
from lossc.ir.stats import forward_size, tree_sizes
from lossc.passes import PIPELINE, Target


def chain(n: int) -> str:
    lines = ["param x = 0.7", "f0 = x"]
    lines += [f"f{k} = sin(f{k - 1}) * f{k - 1} + x" for k in range(1, n + 1)]
    lines.append(f"loss = f{n}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bits", [64, 256, 512])
@pytest.mark.parametrize("path", sorted(CONFORMANCE.glob("*.loss")) + sorted(SAMPLES.glob("*.loss")),
                         ids=lambda p: p.name)
def test_verifier_passes_after_every_pass(path, bits):
    c = compile_source(path, check=True, target=Target.of("float64", bits))
    assert list(c.stages) == ["build"] + [p.name for p in PIPELINE]


def test_without_a_target_the_pipeline_ends_with_the_plain_graph():
    c = compile_source(SAMPLES / "logistic.loss")
    assert list(c.stages) == ["build"] + [p.name for p in PIPELINE if not p.target]
    assert c.graph is c.stages["tidy"]


def test_gradient_graph_does_not_swell_on_chain20():
    c = compile_source(CONFORMANCE / "chain20.loss")
    total, loss_only = len(c.graph.nodes), forward_size(c.graph)
    assert total <= 4 * loss_only
    cse = c.stages["cse"]
    sizes = tree_sizes(cse)
    tree = sum(sizes[v.id] for k, v in cse.outputs.items() if k.startswith("grad."))
    assert tree > 1_000_000          # what symbolic differentiation would produce


def _chain_value_and_grad(n, x=0.7):
    f, d = x, 1.0
    for _ in range(n):
        f, d = np.sin(f) * f + x, (np.cos(f) * f + np.sin(f)) * d + 1
    return f, d


def test_depth_200_chain_compiles_small():
    """Reverse mode adds a constant number of nodes per forward node (no expression
    swell); how fast it compiles is W6's business (make bench), not a test's."""
    src = chain(200)
    c = compile_source(src)
    assert len(c.graph.nodes) <= 4 * forward_size(c.graph)
    m = lossc.compile(src, cache=False)
    v, g = m.value_and_grad({"x": 0.7})
    rv, rg = _chain_value_and_grad(200)
    assert v == pytest.approx(rv, rel=1e-9) and g["x"] == pytest.approx(rg, rel=1e-9)


def test_a_constant_index_carries_its_own_position():
    """The index of w[0] and of w[-1] (made non-negative) showed the statement's
    position (3:1) in `lossc graph`, not the index's."""
    build = compile_source("input x\nparam w[3]\nloss = w[0] * x + [1.5, 2.0][1] * w[-1]\n"
                           ).stages["build"]
    index_spans = sorted((n.attr("value"), n.span.line, n.span.col)
                         for t in build.nodes if t.op == "take" for n in t.inputs[1:])
    assert index_spans == [(0, 3, 10), (1, 3, 30), (2, 3, 37)]


def test_cse_merges_repeated_work():
    c = compile_source("param a = 1\nloss = sin(a) * sin(a) + cos(a)\n")
    ops = [n.op for n in c.graph.nodes]
    assert ops.count("sin") == 1 and ops.count("cos") == 1   # cos(a) shared by loss and grad


def test_cse_keeps_the_sign_of_zero_constants_apart():
    """-0.0 == 0.0 in Python, so the two constants hash-consed into whichever came
    first: 1 / (p * -0.0) gave +inf, atan2(p * -0.0, -1) gave +pi."""
    for src, want in (("1 / (p * 0.0) + 1 / (p * -0.0)", np.nan),
                      ("atan2(p * 0.0, -1) - 2 * atan2(p * -0.0, -1)", 3 * np.pi),
                      ("atan2(p * -0.0, -1) - 2 * atan2(p * 0.0, -1)", -3 * np.pi)):
        m = lossc.compile(f"param p = 1\nloss = {src}\n", cache=False)
        got = m.loss({"p": np.array(1.0)})
        assert got == want or (np.isnan(want) and np.isnan(got)), (src, got)


@pytest.mark.parametrize("src", ["log(-sigmoid(p) + 1)", "log(1 + -sigmoid(p))"])
def test_log_one_minus_sigmoid_spelled_with_a_plus_is_stable(src):
    """Taken for log(1 + x), these became log1p(-sigmoid(z)): -inf at z = 40, where
    the answer is -40 (-softplus(z))."""
    m = lossc.compile(f"param p\nloss = {src}\n", cache=False)
    value, grads = m.value_and_grad({"p": np.array(40.0)})
    assert value == pytest.approx(-40.0, rel=1e-15) and grads["p"] == pytest.approx(-1.0)


@pytest.mark.parametrize("src", ["1 / (1 + exp(-p))", "exp(p) / (1 + exp(p))",
                                 "log(1 / (1 + exp(-p)))"])
@pytest.mark.parametrize("p", [-1000.0, 1000.0])
def test_the_naive_sigmoid_is_the_stable_one(src, p):
    """The logistic function as NumPy users write it: its gradient was NaN at p = -1000
    (exp(1000) overflows: inf / inf), its value NaN at 1000 for exp(p) / (1 + exp(p))."""
    m = lossc.compile(f"param p\nloss = {src}\n", cache=False)
    value, grads = m.value_and_grad({"p": np.array(p)})
    sig = 1 / (1 + np.exp(-p)) if p > 0 else np.exp(p) / (1 + np.exp(p))
    want = (np.log(sig) if p > 0 else p) if "log" in src else sig
    dwant = (1 - sig) if "log" in src else sig * (1 - sig)
    assert value == pytest.approx(want) and grads["p"] == pytest.approx(dwant)


@pytest.mark.parametrize("src", ["-1 + exp(p)", "exp(p) + -1", "log(1 - p)"])
def test_the_rewritten_spellings_keep_their_precision(src):
    """-1 + exp(p) at p = 1e-20 was 0 (no expm1: only exp(x) - 1 was matched), as was
    log(1 - p)."""
    m = lossc.compile(f"param p\nloss = {src}\n", cache=False)
    value, grads = m.value_and_grad({"p": np.array(1e-20)})
    want = -1e-20 if "log" in src else 1e-20
    assert value == want and grads["p"] == pytest.approx(-1.0 if "log" in src else 1.0)


@pytest.mark.parametrize("src, sign", [("max(-0.0, 0.0)", -1), ("max(0.0, -0.0)", 1),
                                       ("min(0.0, -0.0)", 1), ("min(-0.0, 0.0)", -1)])
def test_folded_max_and_min_keep_the_first_zero_as_the_code_does(src, sign):
    """Folded by NumPy's maximum, max(-0.0, 0.0) was +0 (the second at a tie) where the
    compiled max of the same values gives the first, -0: 1 / max(...) was +inf folded
    and -inf computed."""
    folded = lossc.compile(f"param p\nloss = p + 1 / {src}\n", cache=False)
    computed = lossc.compile("param p\nparam a\nparam c\nloss = p + 1 / "
                             f"{src[:3]}(a, c)\n", cache=False)
    a, c = (float(t) for t in src[4:-1].split(", "))
    want = sign * np.inf
    assert folded.loss({"p": np.array(1.0)}) == want
    assert computed.loss({"p": np.array(1.0), "a": np.array(a), "c": np.array(c)}) == want


def test_fold_removes_constant_arithmetic():
    c = compile_source("param a = 1\nloss = (2 * 3 + 1) * a * 1 + 0\n")
    assert all(n.op != "add" for n in c.graph.nodes)
    consts = {n.attr("value") for n in c.graph.nodes if n.op == "const"}
    assert 7.0 in consts


def test_two_outer_products_sharing_a_factor_become_one():
    """softmax regression: logsumexp(z) - z[y] reaches W @ x along two paths, so reverse
    mode adds two outer products with x; fold factors them into one (whose other
    factor is the gradient of z, computed anyway), which the codegen's blocked kernel
    accumulates. A user's own a * v + c * v is kept as written."""
    c = compile_source(SAMPLES / "softmax.loss")
    g = c.graph.outputs["grad.W.sample"]
    assert g.op == "mul" and {i.op for i in g.inputs} == {"broadcast"}
    (other,) = [i.inputs[0] for i in g.inputs if i.inputs[0].op != "input"]
    assert other is c.graph.outputs["grad.c.sample"]
    user = compile_source("input v[3]\nparam a\nparam c\nloss = sum(a * v + c * v)\n")
    adds = [n for n in user.graph.nodes if n.op == "add"]
    assert any(all(i.op == "mul" for i in n.inputs) for n in adds)


def test_hoisting_splits_regularizer_out_of_the_sample_loop():
    c = compile_source(SAMPLES / "logistic.loss")
    outs = c.graph.outputs
    assert {"loss.sample", "loss.once", "grad.w.sample", "grad.w.once", "grad.b.sample"} <= set(outs)
    assert "grad.b.once" not in outs
    from lossc.ir.graph import varying
    vary = varying(c.graph)
    assert outs["loss.once"].id not in vary and outs["grad.w.once"].id not in vary


def test_reduce_sum_counts_the_once_term_per_sample():
    src = "reduce sum\ninput x\nparam a = 2\nloss = a * x + a ^ 2\n"
    m = lossc.compile(src, cache=False)
    x = np.array([1.0, 2.0, 3.0])
    v, g = m.value_and_grad({"a": 2.0}, x=x)
    assert v == pytest.approx(2 * 6 + 3 * 4) and g["a"] == pytest.approx(6 + 3 * 4)
    mean = lossc.compile(src.replace("reduce sum\n", ""), cache=False)
    v, g = mean.value_and_grad({"a": 2.0}, x=x)
    assert v == pytest.approx(2 * 2 + 4) and g["a"] == pytest.approx(2 + 4)


@pytest.mark.parametrize("src, rewrite", [
    ("log(1 + exp(z))", "softplus"), ("log(exp(z) + 1.0)", "softplus"),
    ("sum(log(1 + exp(v)))", "softplus"),
    ("log(sigmoid(z))", "log_sigmoid(z)"), ("log(1 - sigmoid(z))", "-softplus(z)"),
    ("log(sum(exp(v)))", "logsumexp"), ("log(softmax(v))[0]", "log_softmax"),
    ("-log(softmax(v)[1])", "log_softmax(v)[i]"), ("log(softmax(v)[0:1])[0]", "log_softmax"),
    ("log(1 + z)", "log1p"), ("exp(z) - 1", "expm1"),
    ("-1 + exp(z)", "expm1"), ("exp(z) + -1", "expm1"), ("-1.0 + exp(z)", "expm1"),
    ("log(1 - z)", "log1p(-x)"),
    ("log(-sigmoid(z) + 1)", "-softplus(z)"), ("log(1 + -sigmoid(z))", "-softplus(z)"),
    ("1 / (1 + exp(-z))", "sigmoid(z)"), ("1.0 / (exp(-z) + 1)", "sigmoid(z)"),
    ("exp(z) / (1 + exp(z))", "sigmoid(z)"),
])
def test_stabilizing_rewrites_are_applied_and_listed(src, rewrite):
    text = f"input t\ninput u[2]\nparam a = 1\nz = a * t\nv = a * u\nloss = {src}\n"
    c = compile_source(text)
    assert any(rewrite in r for r in c.graph.rewrites), c.graph.rewrites


@pytest.mark.parametrize("loss", ["-log(softmax(z)[y])", "-log(softmax(z)[1])",
                                  "-log(softmax(z)[1:2])[0]", "-sum(log(softmax(z)[tok]))",
                                  "-log(transpose(softmax(Z, axis=0))[0, 1])"])
def test_cross_entropy_through_an_element_of_softmax(loss):
    """-log(softmax(z)[y]), cross-entropy as NumPy users write it: softmax(z)[1] at
    z = (1000, 0) is 0, and its log -inf; as log_softmax(z)[1] it is -1000, and the
    gradient softmax(z) - onehot(y). Through an int scalar, a constant index, a slice,
    an int vector (a gather), and a transpose."""
    labels = {"y": "input y: int\n", "tok": "dim L = 1\ninput tok[L]: int\n"}
    used = [k for k in labels if f"[{k}]" in loss]
    m = lossc.compile("dim K = 2\ninput x[K]\n" + "".join(labels[k] for k in used)
                      + "param a = 1\nz = a * x\n"
                      + ("Z = outer(z, [1.0])\n" if "Z" in loss else "")
                      + f"loss = {loss}\n", cache=False)
    for x in ([1000.0, 0.0], [0.5, -0.25], [-3.0, 700.0]):
        data = {"x": np.array([x]), **{k: np.array([1] if k == "y" else [[1]]) for k in used}}
        v, g = m.value_and_grad({"a": 1.0}, **data)
        z = np.array(x)
        lse = np.logaddexp.reduce(z)
        assert v == pytest.approx(lse - z[1], rel=1e-14)
        soft = np.exp(z - lse)
        assert g["a"] == pytest.approx(float(soft @ z - z[1]), rel=1e-12, abs=1e-300)


def test_stable_forms_stay_accurate_at_large_margins():
    m = lossc.compile("input t\nparam a = 1\nloss = log(1 + exp(a * t)) - log(sigmoid(a * t))\n",
                      cache=False)
    t = np.array([800.0, -800.0])
    v, g = m.value_and_grad({"a": 1.0}, t=t)
    # softplus(800) + softplus(-800) = 800 ; -log(sigmoid(t)) = -log_sigmoid(t): 0 and 800
    assert v == pytest.approx((800 + 0 + 0 + 800) / 2)
    assert np.isfinite(g["a"])
