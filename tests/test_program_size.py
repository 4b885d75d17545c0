"""LANGUAGE.md, "Size of programs": nesting 1,000 levels deep and sums of 10,000 terms
compile and give the reference interpreter's values; past lossc's bounds a
CompileError at the offending spot; and compiling changes nothing process-wide (the
recursion limit, the thread stack size), even with compiles running in several threads.
"""
import sys
import threading

import numpy as np
import pytest

import lossc
from lossc.compiler import compile_source
from lossc.ir.evaluate import evaluate, objective
from lossc.syntax.parser import MAX_NESTING

N = 1000          # levels of nesting the language promises
TERMS = 10_000    # terms of a sum the language promises
HEADROOM = 250    # Python frames left to a compile (the default limit is 1,000)


def with_headroom(frames: int, fn):
    """fn() called so deep in the stack that only `frames` frames remain below the
    recursion limit: a compile that needs more raises RecursionError."""
    depth, f = 0, sys._getframe()
    while f is not None:
        depth, f = depth + 1, f.f_back

    def down(k):
        return fn() if k <= 0 else down(k - 1)
    return down(sys.getrecursionlimit() - depth - frames)


def check_against_reference(src: str, params: dict, data: dict, rtol=1e-12):
    """Compile src with only HEADROOM frames to spare; its objective and gradient equal
    the reference interpreter's on the graph before hoisting."""
    m = with_headroom(HEADROOM, lambda: lossc.compile(src, cache=False))
    value, grads = m.value_and_grad(params, **data)
    graph = compile_source(src, until="dce").graph
    np.testing.assert_allclose(value, objective(graph, params, data), rtol=rtol)
    names = [i.name for i in graph.inputs]
    B = len(data[names[0]]) if names else 1
    for p, g in grads.items():
        want = np.mean([evaluate(graph, params, {k: data[k][i] for k in names}, {},
                                 "grad." + p) for i in range(B)], axis=0)
        np.testing.assert_allclose(g, want, rtol=rtol, atol=1e-300, err_msg=p)


def nest(open_: str, inner: str, close: str, n: int = N) -> str:
    return open_ * n + inner + close * n


DEEP = {
    "parentheses": nest("(", "a", ")"),
    "subtractions in parentheses": nest("a - (", "a", ")"),
    "unary minus": "- " * N + "a",
    "unary minus of parentheses": nest("-(", "a", ")"),
    "calls": nest("sin(", "a", ")"),
    "exp(-exp(-...))": nest("exp(-", "a", ")"),
    "a tower of powers": " ^ ".join(["a"] * N),
    "an index in parentheses": "v[" + nest("(", "1", ")") + "] * a",
    "slices of slices": "sum(u" + "[1:]" * N + ") * a",
    "a vector through nested calls": "sum(x * " + nest("sin(", "v", ")") + ")",
    "a vector through nested signs, sliced": "sum(x * " + nest("-(", "u", ")") + "[998:])",
}


@pytest.mark.filterwarnings("ignore::lossc.LosscWarning")   # (parameters left unused)
@pytest.mark.parametrize("name", sorted(DEEP))
def test_programs_nested_a_thousand_levels_compile_and_agree(name):
    src = ("param a = 1.2\nparam v[3] = 0.5\nparam u[1001] = 0.25\ninput x[3]\n"
           "loss = " + DEEP[name] + "\n")
    rng = np.random.default_rng(0)
    params = {"a": np.array(1.2), "v": rng.uniform(-1, 1, 3),
              "u": rng.uniform(-1, 1, 1001)}
    data = {"x": rng.normal(size=(3, 3))}
    check_against_reference(src, params, data)


@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=["scalars", "vectors", "matrices"])
def test_sums_of_ten_thousand_terms_compile_and_agree(shape):
    """p + x + p * x + 2 * p + p / 3, 2,000 times over, against its closed form."""
    terms = ["p", "x", "p * x", "2 * p", "p / 3"]
    total = " + ".join(terms[k % len(terms)] for k in range(TERMS))
    sized = "[" + ", ".join(map(str, shape)) + "]" if shape else ""
    src = (f"input x{sized}\nparam p{sized}\n"
           f"loss = {'sum' if shape else ''}({total}) * 1e-4\n")
    rng = np.random.default_rng(1)
    p = rng.uniform(-1, 1, shape)
    X = rng.normal(size=(9,) + shape)        # a full group of lanes, and a tail
    m = with_headroom(HEADROOM, lambda: lossc.compile(src, cache=False))
    value, grads = m.value_and_grad({"p": p}, x=X)
    n = TERMS // len(terms)
    want = np.mean([np.sum(n * (p + x + p * x + 2 * p + p / 3)) for x in X]) * 1e-4
    np.testing.assert_allclose(value, want, rtol=1e-10)
    np.testing.assert_allclose(grads["p"], np.mean(n * (1 + X + 2 + 1 / 3), axis=0) * 1e-4,
                               rtol=1e-10)


def test_a_long_sum_inside_a_larger_expression_compiles():
    """A few hundred fused terms under an elementwise function and a reduction: the
    code generator stores every MAX_FUSED_DEPTH-th of them instead of reading through
    all of them at once."""
    src = ("input x[3]\nparam v[3]\nloss = sum(exp(" + " + ".join(["v * x"] * 400)
           + ") * 1e-3)\n")
    rng = np.random.default_rng(2)
    check_against_reference(src, {"v": rng.uniform(-1, 1, 3) * 1e-3},
                            {"x": rng.normal(size=(5, 3))})


def test_storing_a_long_fused_chain_does_not_change_results(monkeypatch):
    """A chain of 150 fused vector terms, stored in pieces (the default) and read in
    one go (no bound): bit for bit the same objective and gradient."""
    from lossc.codegen import plan
    src = ("input x[5]\nparam v[5]\nloss = sum(" + " + ".join(
        ["v * x", "sin(v)", "x / 3", "v * v"] * 40) + ")\n")
    rng = np.random.default_rng(3)
    params = {"v": rng.uniform(-1, 1, 5)}
    data = {"x": rng.normal(size=(11, 5))}
    stored = lossc.compile(src, cache=False).value_and_grad(params, **data)
    monkeypatch.setattr(plan, "MAX_FUSED_DEPTH", 10 ** 6)
    fused = lossc.compile(src, cache=False).value_and_grad(params, **data)
    assert stored[0] == fused[0]
    np.testing.assert_array_equal(stored[1]["v"], fused[1]["v"])


def test_an_array_literal_of_thousands_of_elements_is_one_buffer_filled_once():
    """[a * 0, a * 1, ..., a * 2999]: each element stored once, and gets instruction
    selection at -O0 (its function has more than HUGE_FUNCTION_LINES lines of IR;
    at -O2 LLVM took minutes for 20,000 elements): the value and gradient against
    their closed forms, at a batch with a tail."""
    from lossc.codegen import jit
    n = 3000
    src = ("input x\nparam a = 0.5\nv = [" + ", ".join(f"a * {k}" for k in range(n))
           + "]\nloss = sum(v ^ 2) * x\n")
    text = compile_source(src).unit_ir()[0]
    assert jit.codegen_machine(text) is jit.target_machine(jit.FAST_CODEGEN_LEVEL)
    x = np.linspace(0.5, 1.5, 9)
    value, grads = lossc.compile(src, cache=False).value_and_grad({"a": 0.5}, x=x)
    squares = sum(k * k for k in range(n))
    np.testing.assert_allclose(value, 0.25 * squares * x.mean(), rtol=1e-13)
    np.testing.assert_allclose(grads["a"], squares * x.mean(), rtol=1e-13)


@pytest.mark.parametrize("B", [1, 7, 33])
def test_code_selected_at_o0_agrees_with_the_usual_code(monkeypatch, B):
    """The -O0 instruction selection of huge functions, forced on ordinary models
    (a threshold of 0 lines): their objectives and gradients as the -O2 code's, to
    rounding (-O0 contracts no multiply-add into an FMA)."""
    from lossc.codegen import jit
    rng = np.random.default_rng(B)
    models = {
        "mlp": ("dim D = 5\ndim H = 9\ninput x[D]\ninput y\nparam W[H, D] = normal(0, 1)\n"
                "param w[H] = normal(0, 1)\nloss = (dot(w, tanh(W @ x)) - y) ^ 2\n",
                {"x": rng.normal(size=(B, 5)), "y": rng.normal(size=B)}),
        "softmax": ("dim D = 17\ndim K = 3\ninput x[D]\ninput y: int\n"
                    "param W[K, D] = normal(0, 1)\nz = W @ x\nloss = logsumexp(z) - z[y]\n",
                    {"x": rng.normal(size=(B, 17)), "y": rng.integers(0, 3, B)}),
    }
    for name, (src, data) in models.items():
        usual = lossc.compile(src, cache=False)
        theta = usual.init_params(B)
        want = usual.value_and_grad(theta, **data)
        monkeypatch.setattr(jit, "HUGE_FUNCTION_LINES", 0)
        got = lossc.compile(src, cache=False).value_and_grad(theta, **data)
        monkeypatch.undo()
        np.testing.assert_allclose(got[0], want[0], rtol=1e-13, err_msg=name)
        for p in want[1]:
            np.testing.assert_allclose(got[1][p], want[1][p], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{name}: {p}")


def test_nesting_past_the_bound_is_a_compile_error_at_the_bracket():
    n = MAX_NESTING + 1
    src = "param a\nloss = " + nest("(", "a", ")", n) + "\n"
    with pytest.raises(lossc.CompileError) as e:
        with_headroom(HEADROOM, lambda: lossc.compile(src, cache=False))
    assert (e.value.line, e.value.col) == (2, 7 + n)
    assert "nested too deeply" in e.value.message
    assert str(e.value).count("error:") == 1


def test_compiling_in_threads_changes_nothing_process_wide():
    """Two threads compile deep programs at once while a third samples the recursion
    limit and the thread stack size: neither ever changes, and both compiles work."""
    before = (sys.getrecursionlimit(), threading.stack_size())
    src = "param a = 0.5\nloss = " + nest("(", "a", ")") + " + " + " + ".join(["a"] * 999)
    seen, results, errors = set(), [], []
    done = threading.Event()

    def sample():
        while not done.is_set():
            seen.add((sys.getrecursionlimit(), threading.stack_size()))

    def compile_some():
        try:
            for _ in range(3):
                results.append(lossc.compile(src, cache=False).loss({"a": 0.5}))
        except Exception as e:      # reported below, with the samples
            errors.append(e)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=compile_some) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    sampler.join()
    assert not errors, errors
    assert results == [500.0] * 6
    assert seen == {before}
    assert (sys.getrecursionlimit(), threading.stack_size()) == before
