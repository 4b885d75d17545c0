"""Index arithmetic that overflows 64 bits is an index out of range, never a wrapped
index: `z[2 * k]` with k = -2^63 used to read z[0]. Compiled (every vector width, both
dtypes, the checked call, the repeated native call, a prepared call, the fused training
steps), in the reference interpreter and in constant folding. An integer expression
used as a number is computed in real arithmetic, so it cannot overflow."""
import dataclasses
import re

import numpy as np
import pytest

import lossc
from conftest import assert_compile_error
from lossc.compiler import compile_source
from lossc.ir.evaluate import evaluate, evaluate_batch

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1

# (index expression, a k whose arithmetic wraps to an index in 0..7)
WRAPPING = [("2 * k", INT64_MIN),               # 2 * -2^63 wraps to 0
            ("k * k", 2 ** 32),                 # 2^64 wraps to 0
            ("k * 4 + 3", 2 ** 62),             # 2^64 + 3 wraps to 3
            ("(k + k) - (k + k) + 1", 2 ** 62),  # 2^63 overflows on the way to 1
            ("-k + 2", INT64_MIN),              # -(-2^63) wraps to -2^63, +2 ... stays
            ("k - 1 + 1", INT64_MIN),           # -2^63 - 1 wraps to 2^63 - 1, back to -2^63
            ("4 - 4 * k", 2 ** 62)]             # 4 - 2^64 wraps to 4


def _model(expr):
    return f"dim N = 8\ninput k: int\ninput x\nparam z[N] = 1\nloss = z[{expr}] * x\n"


def _batch(B, bad_at, k_bad):
    k = np.arange(B, dtype=np.int64) % 2     # (in range for every expression)
    k[bad_at] = k_bad
    return {"k": k, "x": np.linspace(1.0, 2.0, B)}


@pytest.mark.parametrize("bits", [64, 512])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("expr, k_bad", WRAPPING)
def test_overflowing_index_arithmetic_is_out_of_range(expr, k_bad, dtype, bits):
    options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
    m = lossc.compile(_model(expr), dtype=dtype, cache=False, options=options)
    theta = m.init_params()
    text = (re.escape(f"index {expr} overflows a 64-bit integer, so it is out of range "
                      "0..7 at sample ") + "{} " + re.escape(f"(line 5, col 10; k = {k_bad})"))
    # the first sample, a vector lane, the padded last iteration, past a lane group
    for B, bad_at in [(1, 0), (20, 13), (20, 19), (37, 33)]:
        data = _batch(B, bad_at, k_bad)
        with pytest.raises(ValueError, match=text.format(bad_at)):
            m.value_and_grad(theta, **data)
        with pytest.raises(ValueError, match=text.format(bad_at)):
            m.loss(theta, **data)
    # the repeated (native) call and a prepared call on the same arrays
    data = _batch(20, 5, 0)
    for _ in range(3):
        m.value_and_grad(theta, **data)
    data["k"][5] = k_bad
    with pytest.raises(ValueError, match=text.format(5)):
        m.value_and_grad(theta, **data)
    call = m.prepare(m.pack_params(theta), data)
    with pytest.raises(ValueError, match=text.format(5)):
        call()


@pytest.mark.parametrize("bits", [64, 128, 256, 512])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_first_bad_lane_of_a_group_is_reported_at_every_lane(dtype, bits):
    """Bad indices in several lanes of one group, one out of range and one overflowing
    in either order: the error names the first bad sample, its value and its kind, at
    each lane of the group (the cold path picks the lowest bad lane of the mask)."""
    options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
    m = lossc.compile(_model("2 * k"), dtype=dtype, cache=False, options=options)
    theta = m.init_params()
    lanes = max(bits // (64 if dtype == "float64" else 32), 1)
    B = 2 * lanes + 3
    overflow = ("index 2 \\* k overflows a 64-bit integer, so it is out of range 0..7 at "
                "sample {} \\(line 5, col 10; k = -9223372036854775808\\)")
    in_range = "index 2 \\* k = 10 is out of range 0..7 at sample {} \\(line 5, col 10; k = 5\\)"
    for first in range(B):
        for values, text in (((INT64_MIN, 5), overflow), ((5, INT64_MIN), in_range)):
            data = _batch(B, first, values[0])
            data["k"][first + 1:] = values[1]
            for call in (m.value_and_grad, m.loss):
                with pytest.raises(ValueError, match=text.format(first)):
                    call(theta, **data)


def test_indices_near_the_limits_that_do_not_overflow_are_fine():
    m = lossc.compile(_model("k - 9223372036854775800"), cache=False)
    z = np.arange(8.0)
    k = np.array([INT64_MAX - 7, INT64_MAX - 2, INT64_MAX - 7], dtype=np.int64)
    value, grads = m.value_and_grad({"z": z}, k=k, x=np.ones(3))
    assert value == pytest.approx((0 + 5 + 0) / 3)
    with pytest.raises(ValueError, match=r"= -1 is out of range 0\.\.7 at sample 0"):
        m.value_and_grad({"z": z}, k=np.array([INT64_MAX - 8]), x=np.ones(1))


def test_the_fused_training_steps_report_the_overflow():
    m = lossc.compile(_model("2 * k"), cache=False)
    data = _batch(64, 40, INT64_MIN)
    with pytest.raises(ValueError, match="index 2 \\* k overflows a 64-bit integer, so it is "
                                         "out of range 0..7 at sample 40"):
        lossc.train(m, data=data, optimizer=lossc.Adam(lr=0.01), batch_size=8, epochs=1,
                    shuffle=False)


@pytest.mark.parametrize("expr, k_bad", WRAPPING)
def test_the_reference_interpreter_refuses_the_same_indices(expr, k_bad):
    graph = compile_source(_model(expr)).graph
    with pytest.raises(IndexError, match="overflows a 64-bit integer|out of range"):
        evaluate(graph, {"z": np.ones(8)}, {"k": np.int64(k_bad), "x": 1.0}, {},
                 "loss.sample")
    assert evaluate(graph, {"z": np.arange(8.0)}, {"k": np.int64(1), "x": 1.0}, {},
                    "loss.sample") == \
        lossc.compile(_model(expr), cache=False).loss({"z": np.arange(8.0)},
                                                      k=np.array([1]), x=np.ones(1))


@pytest.mark.parametrize("expr, k_bad", WRAPPING)
def test_the_batched_reference_interpreter_takes_index_arithmetic_on_a_batch(expr, k_bad):
    """evaluate_batch computes elementwise ops on whole batches, index arithmetic and its
    checks included: the same values as sample by sample, the same refusals."""
    graph = compile_source(_model(expr)).graph
    z = {"z": np.arange(8.0)}
    data = _batch(5, 0, 1)
    got = evaluate_batch(graph, z, data, {}, ["loss.sample"])["loss.sample"]
    want = [evaluate(graph, z, {"k": data["k"][i], "x": data["x"][i]}, {}, "loss.sample")
            for i in range(5)]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(IndexError, match="overflows a 64-bit integer|out of range"):
        evaluate_batch(graph, z, _batch(5, 3, k_bad), {}, ["loss.sample"])


def test_constant_folding_leaves_overflowing_index_arithmetic_to_the_run_time_check():
    from lossc.ir.graph import Builder, Graph
    from lossc.passes.fold import fold
    g = Graph()
    b = Builder(g)
    big = b.emit("iconst", value=INT64_MAX)
    s = b.emit("iadd", (big, b.emit("iconst", value=1)))
    ok = b.emit("iadd", (b.emit("iconst", value=2), b.emit("iconst", value=3)))
    g.outputs = {"s": s, "ok": ok}
    out = fold(g)
    assert out.outputs["s"].op == "iadd"
    assert out.outputs["ok"].op == "iconst" and out.outputs["ok"].attr("value") == 5


def test_integer_expressions_used_as_numbers_do_not_wrap():
    m = lossc.compile("input k: int\nparam w = 1\nloss = w * (2 * k + 1) + w * (k * k)\n",
                      cache=False)
    k = np.array([INT64_MIN, 2 ** 32, 3], dtype=np.int64)
    value, grads = m.value_and_grad({"w": 1.0}, k=k)
    per = [2.0 * float(v) + 1 + float(v) * float(v) for v in k.tolist()]
    assert value == pytest.approx(np.mean(per), rel=1e-15)
    assert grads["w"] == pytest.approx(np.mean(per), rel=1e-15)


@pytest.mark.parametrize("source, col, words", [
    ("loss = sum(v) * v[99999999999999999999]", 19, ["integer 99999999999999999999 is bey"]),
    ("loss = v[-9223372036854775809]", 10, ["-9223372036854775809 is beyond 64 bits"]),
    ("loss = sum(v[0:99999999999999999999])", 16, ["beyond 64 bits: an index is a 64-bit"]),
    ("loss = v[-9223372036854775808]", 10, ["index -9223372036854775808 is out of range"]),
    ("loss = sum(v[-9223372036854775807 - 1:])", 14,
     ["slice -9223372036854775807 - 1: (-9223372036854775805:3 on this axis)"]),
    ("loss = v[-9223372036854775807]", 10, ["out of range for an axis of size 3"]),
    ("dim N = 4294967296\ninput k: int\nloss = v[k + N * N]", 14,
     ["integer constant N * N = 18446744073709551616 is beyond 64 bits, where it is used "
      "as an integer"]),
    ("input k: int\nloss = v[(-9223372036854775808 - 1) * k]", 10,
     ["integer constant (-9223372036854775808 - 1) = -9223372036854775809 is beyond 64"]),
    ("loss = v[0] * (9223372036854775807 * 9223372036854775807 * 9223372036854775807 * "
     "9223372036854775807 * 9223372036854775807 * 9223372036854775807 * 9223372036854775807 "
     "* 9223372036854775807 * 9223372036854775807 * 9223372036854775807 * "
     "9223372036854775807 * 9223372036854775807 * 9223372036854775807 * "
     "9223372036854775807 * 9223372036854775807 * 9223372036854775807 * "
     "9223372036854775807)", 15, ["integer constant expression overflows float64 (its "
                                   "value is beyond 2^1024)"]),
    # 2^1024 - 1: within 1024 bits, past float64's largest
    ("a = " + " * ".join(["4611686018427387904"] * 16) + " * 2147483648\n"
     "loss = v[0] * (a + (a - 1))", 15, ["(a value of 309 digits) overflows float64"]),
])
def test_integer_constants_past_64_bits(source, col, words):
    """An integer literal beyond 64 bits is read as a real: where an index is required
    the error says so (not "must be an int"); -2^63 is an integer; integer constants
    are computed exactly, and one past 64 bits is an error where it is used as an
    integer (as an index, or with an int input that is)."""
    line = 2 + source.count("\n")
    assert_compile_error("param v[3]\n" + source + "\n", line, col, words)


@pytest.mark.parametrize("source, want", [
    ("dim N = 4294967296\nloss = v[0] * (N * N)", 2.0 ** 64),
    ("loss = v[0] * (-9223372036854775808 - 1)", -2.0 ** 63),
    ("loss = v[0] * (3037000500 * 3037000500)", 9223372037000250000.0),
    ("loss = v[0] * (3037000500 * 3037000500 + 99999999999999999999)",
     9223372037000250000.0 + 1e20),
    ("input k: int\nloss = v[0] * (k + 3037000500 * 3037000500)", 9223372037000250001.0),
])
def test_integer_constants_past_64_bits_used_as_numbers_are_reals(source, want):
    """As a literal beyond 64 bits is a real, so is a constant expression of integers
    past them used as a number (as NumPy and JAX take Python's exact integers): its
    exact value, rounded once."""
    m = lossc.compile("param v[3]\n" + source + "\n", cache=False)
    data = {"k": np.array([1])} if "input k" in source else {}
    assert m.loss({"v": np.array([1.0, 2.0, 3.0])}, **data) == want


@pytest.mark.parametrize("k, accepted", [
    (np.array([INT64_MAX, INT64_MIN], dtype=np.int64), True),
    (np.array([2 ** 63 - 1], dtype=np.uint64), True),
    (np.array([2 ** 63], dtype=np.uint64), False),
    (np.array([2 ** 64 - 1], dtype=np.uint64), False),
    (np.array([-2.0 ** 63, 2.0 ** 62 * 1.5]), True),
    (np.array([2.0 ** 63]), False),
    (np.array([-2.0 ** 64]), False)])
def test_int_inputs_take_every_64_bit_integer_and_nothing_else(k, accepted):
    m = lossc.compile("input k: int\nparam w = 1\nloss = w * k\n", cache=False)
    if accepted:
        value = m.loss({"w": 1.0}, k=k)
        assert value == pytest.approx(np.mean([float(v) for v in k.tolist()]))
    else:
        with pytest.raises(ValueError, match="int input 'k' holds .* at sample 0; does not "
                                             "fit a 64-bit integer"):
            m.loss({"w": 1.0}, k=k)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_narrow_float_int_inputs_are_checked_without_warnings(dtype):
    """A float16 int input compared with 2.0 ** 63 overflowed float16, and the call
    printed a RuntimeWarning; the values are checked in float64."""
    import warnings
    m = lossc.compile("input k: int\nparam w = 1\nloss = w * k\n", cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.loss({"w": 1.0}, k=np.array([1, 2, 6], dtype=dtype)) == 3.0
        for bad in (np.inf, -np.inf, 0.5):
            with pytest.raises(ValueError, match="int input 'k' holds .* it must hold"):
                m.loss({"w": 1.0}, k=np.array([1, bad], dtype=dtype))


def test_a_chain_of_squared_integer_constants_is_refused_at_once():
    """Exact integer constants (Python's) squared line after line: the 30th is a number
    of a billion bits, which the compiler computed (minutes, gigabytes); past float64's
    range a constant is an error where it is made."""
    lines = ["a0 = 3"] + [f"a{i} = a{i - 1} * a{i - 1}" for i in range(1, 40)]
    source = "param w\n" + "\n".join(lines) + "\nloss = w\n"
    with pytest.raises(lossc.CompileError, match=r"beyond 2\^1024"):
        lossc.compile(source, cache=False)
