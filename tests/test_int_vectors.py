"""Integer vector inputs, `input tok[L]: int`: gathers v[tok], M[tok], M[tok, j],
M[j, tok], range-checked at call time; int vectors as numbers (arithmetic, sum); the
gradient of a gather adds into the gathered rows, repeated ids adding up."""
import numpy as np
import pytest

import lossc
from conftest import assert_compile_error
from lossc.compiler import compile_source
from lossc.ir.evaluate import objective

SOURCE = """dim V = 7
dim F = 3
dim L = 4
input tok[L]: int
input y
param E[V, F]
param b[V]
param w[F]
param G[2, V]
h = mean(E[tok], axis=0)
loss = (dot(w, h) + sum(b[tok]) + E[tok, 1][0] + sum(G[1, tok]) - y) ^ 2 + 0.01 * sum(tok)
"""


def _reference(theta, tok, y):
    """Value and gradient in NumPy."""
    E, b, w, G = theta["E"], theta["b"], theta["w"], theta["G"]
    B = len(y)
    value, gE, gb, gw, gG = 0.0, np.zeros_like(E), np.zeros_like(b), np.zeros_like(w), \
        np.zeros_like(G)
    for t, yy in zip(tok, y):
        h = E[t].mean(axis=0)
        r = w @ h + b[t].sum() + E[t, 1][0] + G[1, t].sum() - yy
        value += r ** 2 + 0.01 * t.sum()
        d = 2 * r
        np.add.at(gE, t, d * w / len(t))
        np.add.at(gb, t, d)
        gE[t[0], 1] += d
        np.add.at(gG[1], t, d)
        gw += d * h
    return value / B, {"E": gE / B, "b": gb / B, "w": gw / B, "G": gG / B}


@pytest.mark.parametrize("B", [1, 3, 8, 19])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gathers_and_their_gradients(B, dtype):
    m = lossc.compile(SOURCE, dtype=dtype)
    rng = np.random.default_rng(B)
    theta = {"E": rng.normal(size=(7, 3)), "b": rng.normal(size=7), "w": rng.normal(size=3),
             "G": rng.normal(size=(2, 7))}
    tok = rng.integers(0, 7, size=(B, 4))
    tok[0] = [5, 5, 0, 5]                     # repeated ids add up
    y = rng.normal(size=B)
    value, grads = m.value_and_grad({k: v.astype(dtype) for k, v in theta.items()},
                                    tok=tok, y=y)
    want, dwant = _reference(theta, tok, y)
    tol = 1e-12 if dtype == "float64" else 2e-4
    assert value == pytest.approx(want, rel=tol)
    for k in dwant:
        np.testing.assert_allclose(grads[k], dwant[k], rtol=tol, atol=tol, err_msg=k)
    if dtype == "float64":
        graph = compile_source(SOURCE).stages["build"]
        assert objective(graph, theta, {"tok": tok, "y": y}) == pytest.approx(want, rel=1e-12)


def test_an_index_out_of_range_names_the_input_sample_and_value():
    m = lossc.compile(SOURCE)
    theta = m.init_params()
    tok = np.zeros((10, 4), dtype=np.int64)
    tok[6, 2] = 7
    with pytest.raises(ValueError, match=r"index tok = 7 is out of range 0..6 at sample 6 "
                                         r"\(line 10, col \d+; tok = \[0, 0, 7, 0\]\)"):
        m.value_and_grad(theta, tok=tok, y=np.zeros(10))
    tok[6, 2] = -1
    with pytest.raises(ValueError, match=r"index tok = -1 is out of range 0..6 at sample 6"):
        m.loss(theta, tok=tok, y=np.zeros(10))


def test_int_vectors_as_numbers():
    m = lossc.compile("dim K = 3\ninput n[K]: int\nparam a[K]\n"
                      "loss = sum(lgamma(n + exp(a))) - lgamma(sum(n) + 1) + sum(-n * a)\n")
    n = np.array([[0, 2, 5], [1, 1, 1]])
    a = np.array([0.1, -0.3, 0.2])
    value, grads = m.value_and_grad({"a": a}, n=n)
    from scipy.special import digamma, gammaln
    per = [np.sum(gammaln(r + np.exp(a))) - gammaln(r.sum() + 1) - np.sum(r * a) for r in n]
    assert value == pytest.approx(np.mean(per), rel=1e-13)
    dper = [digamma(r + np.exp(a)) * np.exp(a) - r for r in n]
    np.testing.assert_allclose(grads["a"], np.mean(dper, axis=0), rtol=1e-13)


@pytest.mark.parametrize("source, line, col, words", [
    ("dim K = 2\ninput t[K, K]: int\nparam w\nloss = w\n", 2, 1, ["scalar or a vector"]),
    ("dim L = 2\ninput t[L]: int\nparam M[3, 3]\nloss = sum(M[t, t])\n", 4, 17,
     ["one int vector index"]),
    ("dim L = 2\ninput t[L]: int\nparam v[3]\nloss = sum(v[t + 1])\n", 4, 14,
     ["got a real value"]),
    ("dim L = 2\ninput t[L]: int\nparam v[3]\nloss = v[t]\n", 4, 8, ["scalar"]),
])
def test_int_vector_errors(source, line, col, words):
    assert_compile_error(source, line, col, words)


def test_the_gather_gradient_costs_what_is_gathered():
    """An embedding of a million rows, four gathered per sample, 100,000 samples: the
    gradient adds into the gathered rows only. Computed densely (every row, for every
    sample) it would take 4e11 steps, far past the subprocess's hang guard."""
    code = """if True:
        import numpy as np, lossc
        m = lossc.compile("dim V = 1000000\\ndim L = 4\\ninput tok[L]: int\\ninput y\\n"
                          "param E[V]\\nreduce sum\\nloss = (sum(E[tok]) - y) ^ 2\\n")
        rng = np.random.default_rng(0)
        tok = rng.integers(0, 1000000, size=(100000, 4))
        E = rng.normal(size=1000000)
        y = rng.normal(size=100000)
        value, g = m.value_and_grad({"E": E}, tok=tok, y=y)
        r = E[tok].sum(axis=1) - y
        want = np.zeros(1000000)
        np.add.at(want, tok, 2 * r[:, None] * np.ones((1, 4)))
        assert abs(value - np.sum(r ** 2)) <= 1e-9 * np.sum(r ** 2)
        assert np.allclose(g["E"], want, rtol=1e-12, atol=1e-12)
        print("ok")
    """
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=240)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
