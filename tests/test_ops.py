"""Table tests over the op table: every entry complete; for each op with an example,
the compiled value agrees with its NumPy `eval`, and the compiled gradient (from its
`vjp` rule) agrees with central finite differences of that NumPy semantics."""
import numpy as np
import pytest

from lossc.api import compile_graph
from lossc.ir.build import FUNCTIONS
from lossc.ir.graph import Builder, Graph
from lossc.ir.ops import OPS, Example, Math, OpDef
from lossc.ir.spec import InputSpec, ParamSpec
from lossc.passes import run_pipeline

# op -> (argument shapes, domain per argument, attrs): each op's own example
CASES = {name: (list(d.example.shapes), list(d.example.domains), dict(d.example.attrs))
         for name, d in OPS.items() if isinstance(d.example, Example)}


@pytest.mark.parametrize("name", sorted(OPS))
def test_table_is_complete(name):
    """Every fact of every entry is given (ir/ops/base.py says what each is)."""
    assert OPS[name].missing() == []


def test_an_incomplete_entry_is_found():
    """(what the test above relies on)"""
    facts = dict(infer=lambda a, x: (x.shape, "real"), eval=lambda a, x: x ** 3,
                 names=("cube",), axis=False, reduction=False, stage="any",
                 differentiable=True, vjp=None, mask=None, jvp=None, single_pass=True,
                 foldable=True, math=Math("cube", "libm"), example="")
    assert OpDef("cube", 1, "elem", **facts).missing() == ["sympy"]
    facts["sympy"] = lambda s, n, x: x ** 3
    assert OpDef("cube", 1, "elem", **facts).missing() == ["vjp (the derivative rule)",
                                                           "jvp (the forward-mode rule)"]


def test_the_facts_agree_with_each_other():
    from lossc.codegen import vmath
    from lossc.codegen.externals import ALLOWED
    for name, d in OPS.items():
        if d.math is not None:
            if d.math.via == "vmath":
                assert d.math.name in vmath.FUNCTIONS, name
            elif d.math.via in ("libm", "intrinsic"):
                assert d.math.name in ALLOWED and d.math.name + "f" in ALLOWED, name
        if d.kind in ("view", "leaf"):
            assert not d.single_pass and not d.foldable, name
        if d.kind == "elem":
            assert d.single_pass, name
        if d.reduction:
            assert d.kind == "tensor" and d.axis, name
        assert set(d.names) <= FUNCTIONS, name


B = 19    # more than two vectors of lanes plus a tail, at every SIMD width


def scaled_params(b, g, shapes, t) -> list:
    """Parameters p0, p1, ... of these shapes (declared in g), each times t."""
    args, offset = [], 0
    for k, shape in enumerate(shapes):
        p = b.emit("param", (), name=f"p{k}", shape=shape, offset=offset)
        args.append(b.mul(p, t))
        g.params.append(ParamSpec(f"p{k}", shape, ("const", (0.0,)), offset))
        offset += int(np.prod(shape))
    return args


def _model(op, shapes, attrs, weights_shape=None):
    """loss = sum(op(t * params...) * weights): a scalar through which every element of
    the op's result reaches the gradient with a distinct weight. The per-sample scale t
    makes the op's arguments differ between samples, so the op runs on SIMD lanes."""
    g = Graph()
    b = Builder(g, share=False)
    t = b.emit("input", (), name="t", shape=(), is_int=False, index=1)
    out = b.emit(op, scaled_params(b, g, shapes, t), **attrs)
    wshape = out.shape
    w = b.emit("input", (), name="w", shape=wshape, is_int=False, index=0)
    g.inputs += [InputSpec("w", wshape, False), InputSpec("t", (), False)]
    prod = b.mul(out, w)
    loss = b.emit("sum", (prod,), axes=tuple(range(prod.rank))) if prod.rank else prod
    g.outputs["loss"] = loss
    return compile_graph(run_pipeline(g, check=True)), out.shape


@pytest.mark.parametrize("op", sorted(CASES))
def test_op_value_and_gradient(op):
    shapes, domains, attrs = CASES[op]
    model, out_shape = _model(op, shapes, attrs)
    rng = np.random.default_rng(sum(map(ord, op)))
    args = [rng.uniform(lo, hi, size=s) for s, (lo, hi) in zip(shapes, domains)]
    w = rng.normal(size=(B,) + out_shape)
    t = rng.uniform(0.9, 1.1, size=B)
    theta = {f"p{k}": a for k, a in enumerate(args)}

    def objective(args):
        return np.mean([np.sum(np.asarray(OPS[op].eval(attrs, *[a * t[i] for a in args]))
                               * w[i]) for i in range(B)])

    assert np.shape(OPS[op].eval(attrs, *args)) == out_shape
    value, grads = model.value_and_grad(theta, w=w, t=t)
    assert value == pytest.approx(objective(args), rel=1e-12, abs=1e-12)

    if OPS[op].vjp is None:
        return
    for k, a in enumerate(args):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(*a.shape):
            h = 1e-6
            up, down = [x.copy() for x in args], [x.copy() for x in args]
            up[k][idx] += h
            down[k][idx] -= h
            numeric[idx] = (objective(up) - objective(down)) / (2 * h)
        np.testing.assert_allclose(grads[f"p{k}"], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"d/d p{k} of {op}")


def test_kink_conventions_of_maximum_and_relu():
    model, _ = _model("maximum", [(3,), (3,)], {})
    v, g = model.value_and_grad({"p0": np.array([1.0, 2, 3]), "p1": np.array([1.0, 1, 4])},
                                w=np.ones((1, 3)), t=np.ones(1))
    np.testing.assert_array_equal(g["p0"], [1, 1, 0])   # ties go to the first argument
    np.testing.assert_array_equal(g["p1"], [0, 0, 1])
    model, _ = _model("relu", [(3,)], {})
    _, g = model.value_and_grad({"p0": np.array([-1.0, 0.0, 2.0])}, w=np.ones((1, 3)), t=np.ones(1))
    np.testing.assert_array_equal(g["p0"], [0, 0, 1])


def test_max_reduction_sends_gradient_to_first_maximum():
    model, _ = _model("max", [(4,)], {"axes": (0,)})
    _, g = model.value_and_grad({"p0": np.array([1.0, 3.0, 3.0, 2.0])}, w=np.ones((1,)), t=np.ones(1))
    np.testing.assert_array_equal(g["p0"], [0, 1, 0, 0])


def test_prod_gradient_with_zeros_is_exact():
    model, _ = _model("prod", [(4,)], {"axes": (0,)})
    _, g = model.value_and_grad({"p0": np.array([2.0, 0.0, 3.0, 0.0])}, w=np.ones((1,)), t=np.ones(1))
    np.testing.assert_array_equal(g["p0"], [0, 0, 0, 0])
    _, g = model.value_and_grad({"p0": np.array([2.0, 0.0, 3.0, 5.0])}, w=np.ones((1,)), t=np.ones(1))
    np.testing.assert_array_equal(g["p0"], [0, 30, 0, 0])


def test_norm_of_zero_has_zero_gradient():
    model, _ = _model("norm", [(3,)], {"axes": (0,)})
    v, g = model.value_and_grad({"p0": np.zeros(3)}, w=np.ones((1,)), t=np.ones(1))
    assert v == 0
    np.testing.assert_array_equal(g["p0"], [0, 0, 0])


def test_stable_functions_at_extremes():
    model, _ = _model("softplus", [(4,)], {})
    x = np.array([1000.0, -1000.0, 30.0, 1e-9])
    v, g = model.value_and_grad({"p0": x}, w=np.ones((1, 4)), t=np.ones(1))
    assert v == pytest.approx(1000 + 0 + 30 + np.log1p(np.exp(-30)) + np.log(2) + 5e-10,
                              rel=1e-14)
    np.testing.assert_allclose(g["p0"], [1, 0, 1 / (1 + np.exp(-30)), 0.5 + 2.5e-10],
                               rtol=1e-14)
    model, _ = _model("log_sigmoid", [(5,)], {})
    x = np.array([1000.0, -1000.0, 30.0, 1e-9, -745.5])
    v, g = model.value_and_grad({"p0": x}, w=np.ones((1, 5)), t=np.ones(1))
    assert v == pytest.approx(-np.log1p(np.exp(-1000.0)) - 1000 - np.log1p(np.exp(-30.0))
                              - np.log(2) + 5e-10 - 745.5, rel=1e-14)
    np.testing.assert_allclose(g["p0"], [0, 1, 1 / (1 + np.exp(30)), 0.5 - 2.5e-10, 1],
                               rtol=1e-14, atol=1e-300)
    model, _ = _model("logsumexp", [(2,)], {"axes": (0,)})
    v, g = model.value_and_grad({"p0": np.array([1000.0, 1000.0])}, w=np.ones((1,)), t=np.ones(1))
    assert v == pytest.approx(1000 + np.log(2), rel=1e-15)
    np.testing.assert_allclose(g["p0"], [0.5, 0.5])
