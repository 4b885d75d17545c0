"""Forward mode (passes/forward.py): each op's jvp rule, alone and over the gradient
graph, against central differences; the graphs `lossc graph --mode` shows."""
import subprocess
import sys

import numpy as np
import pytest

from lossc.ir.evaluate import evaluate_batch
from lossc.ir.graph import Builder, Graph
from lossc.ir.ops import OPS, Example, OpDef
from lossc.ir.spec import InputSpec
from lossc.passes import pipeline, run_pipeline

from test_ops import scaled_params

CASES = {name: d.example for name, d in OPS.items()
         if isinstance(d.example, Example) and d.jvp is not None}
B = 5


def op_graph(op, example):
    """loss = sum(op(t * params) * w), as tests/test_ops.py builds it."""
    g = Graph()
    b = Builder(g, share=False)
    t = b.emit("input", (), name="t", shape=(), is_int=False, index=1)
    out = b.emit(op, scaled_params(b, g, example.shapes, t), **example.attrs)
    w = b.emit("input", (), name="w", shape=out.shape, is_int=False, index=0)
    g.inputs += [InputSpec("w", out.shape, False), InputSpec("t", (), False)]
    prod = b.mul(out, w)
    g.outputs["loss"] = b.emit("sum", (prod,), axes=tuple(range(prod.rank))) \
        if prod.rank else prod
    return g, out.shape


def mean_of(graph, theta, data, name):
    return np.mean(evaluate_batch(graph, theta, data, {}, [name])[name], axis=0)


@pytest.mark.parametrize("op", sorted(CASES))
def test_op_jvp_and_forward_over_reverse(op):
    """Each jvp rule, through the reference interpreter: the tangent of the loss against
    central differences along a random direction, and (forward over reverse) the
    tangent of the gradient against central differences of the gradient."""
    ex = CASES[op]
    g, out_shape = op_graph(op, ex)
    rng = np.random.default_rng(sum(map(ord, op)))
    theta = {f"p{k}": rng.uniform(lo, hi, size=s)
             for k, (s, (lo, hi)) in enumerate(zip(ex.shapes, ex.domains))}
    # (a direction small enough that theta +- h t stays in the op's domain)
    tangent = {k: rng.normal(size=np.shape(v)) * 0.1 for k, v in theta.items()}
    data = {"w": rng.normal(size=(B,) + out_shape), "t": rng.uniform(0.9, 1.1, size=B)}
    fwd = run_pipeline(g, check=True, until="forward", passes=pipeline("forward"))
    hvp = run_pipeline(g, check=True, until="forward", passes=pipeline("hvp"))
    grad = run_pipeline(g, check=True, until="autodiff")
    both = {**theta, **{f"tangent.{k}": v for k, v in tangent.items()}}

    def moved(h):
        return {k: v + h * tangent[k] for k, v in theta.items()}

    h = 1e-5
    numeric = (mean_of(grad, moved(h), data, "loss")
               - mean_of(grad, moved(-h), data, "loss")) / (2 * h)
    assert mean_of(fwd, both, data, "tangent.loss") == pytest.approx(numeric, rel=1e-6,
                                                                     abs=1e-8)
    for k in theta:
        numeric = (mean_of(grad, moved(h), data, f"grad.{k}")
                   - mean_of(grad, moved(-h), data, f"grad.{k}")) / (2 * h)
        np.testing.assert_allclose(mean_of(hvp, both, data, f"tangent.grad.{k}"), numeric,
                                   rtol=1e-5, atol=1e-7, err_msg=f"H t, d/d {k} of {op}")


def test_an_entry_without_a_forward_rule_is_found():
    """The table test (test_ops.test_table_is_complete) fails for a differentiable op
    that lacks a jvp, a backward-only one included, and for one that has a rule it
    should not."""
    facts = dict(infer=lambda a, x: (x.shape, "real"), eval=lambda a, x: x ** 3,
                 sympy=lambda s, n, x: x ** 3, names=(), axis=False, reduction=False,
                 single_pass=True, foldable=True, lower=lambda em, g, n, x: x, example="",
                 differentiable=True, stage="backward", vjp=None, mask=None)
    assert OpDef("cube", 1, "elem", jvp=None, **facts).missing() == \
        ["jvp (the forward-mode rule)"]
    assert OpDef("cube", 1, "elem", **facts).missing() == ["jvp"]
    facts["differentiable"] = False
    assert OpDef("cube", 1, "elem", jvp=lambda *a: None, **facts).missing() == \
        ["no jvp (forward mode never differentiates it)"]
    facts.update(differentiable=True, stage="lower")     # (made after forward mode)
    assert OpDef("cube", 1, "elem", jvp=None, **facts).missing() == []


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lossc.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_graph_command_shows_the_forward_and_hvp_graphs():
    out = run_cli("graph", "samples/seed.loss", "--mode", "forward")
    assert out.returncode == 0, out.stderr
    assert "param tangent.x1" in out.stdout and "tangent.loss.once" in out.stdout
    assert "grad.x1" not in out.stdout
    out = run_cli("graph", "samples/logistic.loss", "--mode", "hvp", "--after", "forward")
    assert out.returncode == 0, out.stderr
    assert "tangent.grad.w = " in out.stdout and "grad.w = " in out.stdout
    out = run_cli("graph", "samples/seed.loss", "--mode", "forward", "--after", "autodiff")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "lossc: error: unknown pass 'autodiff'; the passes of mode forward are build, "
        "stabilize, forward, fold, cse, dce, hoist, tidy"]
    out = run_cli("graph", "samples/seed.loss", "--mode", "hvp", "--format", "latex")
    assert out.returncode == 1 and "Traceback" not in out.stderr
