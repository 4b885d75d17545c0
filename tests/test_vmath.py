"""The inline vector math functions against NumPy, over their whole domain, in both
dtypes and at every vector width: accuracy in ulp, and IEEE special values."""
import ctypes

import numpy as np
import pytest
from llvmlite import ir

from lossc.codegen import jit
from lossc.codegen.values import I64, ValueEmitter

REFS = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh,
        "log1p_unit": np.log1p}     # (defined on [0, 1], NaN; sampled there)
MAX_ULP = {"float64": 4, "float32": 4}


def kernel(name: str, dtype: str, width: int):
    """void f(T* x, T* y, i64 n): y[i] = name(x[i]), `width` lanes at a time."""
    T = ir.DoubleType() if dtype == "float64" else ir.FloatType()
    mod = ir.Module()
    mod.triple = jit.host_cpu()["triple"]
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [T.as_pointer(), T.as_pointer(), I64]),
                     name="f")
    b = ir.IRBuilder(fn.append_basic_block())
    em = ValueEmitter(mod, T, b)
    x, y, n = fn.args
    VT = ir.VectorType(T, width) if width > 1 else T
    loop, body, done = (fn.append_basic_block(s) for s in ("loop", "body", "done"))
    entry = b.block
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    v = b.load(b.bitcast(b.gep(x, [i]), VT.as_pointer()), align=1)
    r = em.math(name, v)
    b.store(r, b.bitcast(b.gep(y, [i]), VT.as_pointer()), align=1)
    nxt = b.add(i, ir.Constant(I64, width))
    i.add_incoming(nxt, body)
    b.branch(loop)
    b.position_at_end(done)
    b.ret_void()
    obj = jit.compile_ir(str(mod))
    native = _Loaded(obj)
    return native


class _Loaded:
    def __init__(self, obj):
        import llvmlite.binding as llvm
        empty = llvm.parse_assembly("")
        self.engine = llvm.create_mcjit_compiler(empty, jit.new_target_machine())
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
            self.engine.get_function_address("f"))

    def __call__(self, x, width):
        n = len(x)
        pad = (-n) % width
        xp = np.concatenate([x, np.ones(pad, dtype=x.dtype)])
        y = np.empty_like(xp)
        self.fn(xp.ctypes.data, y.ctypes.data, len(xp))
        return y[:n]


def sample_points(name, dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(0)
    big = float(np.log(info.max))
    pts = [rng.uniform(-big * 1.05, big * 1.05, 20000),
           rng.uniform(-1, 1, 20000), np.logspace(-40, 0, 2000) * rng.choice([-1, 1], 2000),
           np.array([0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, -1e-300, 710.0, -745.2, -746.0,
                     709.78, -708.4, 88.7, -87.3, -103.9, 20.0, 19.0, 0.34657, -0.34657])]
    if name in ("log", "log1p"):
        pts += [np.exp(rng.uniform(-745, 709, 20000)), np.array([5e-324, 2.2e-308, 1e-310]),
                rng.uniform(-1, 0, 2000), np.array([-1.0, -0.999999999, 1e300, 1.7e308])]
    if name == "log1p_unit":
        pts = [rng.uniform(0, 1, 20000), np.logspace(-320, 0, 5000),
               np.array([0.0, 1.0, 5e-324, 1e-16, 1.1e-16, 2 ** -53, 0.41421356, 0.5])]
    x = np.concatenate(pts)
    with np.errstate(all="ignore"):
        return x.astype(dtype)


def ulp_error(got, ref, dtype):
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    both_nan = np.isnan(got) & np.isnan(ref)
    same = (got == ref) | both_nan
    spacing = np.abs(np.spacing(ref.astype(dtype))).astype(np.float64)
    with np.errstate(all="ignore"):
        err = np.where(same, 0.0, np.abs(got - ref) / spacing)
    return np.where(np.isfinite(err), err, np.inf)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(REFS))
def test_accuracy_and_special_values(name, dtype):
    width = 8 if dtype == "float64" else 16
    vec, scalar = kernel(name, dtype, width), kernel(name, dtype, 1)
    x = sample_points(name, dtype)
    with np.errstate(all="ignore"):
        ref = REFS[name](x.astype(np.float64)).astype(dtype)
    got_v, got_s = vec(x, width), scalar(x, 1)
    np.testing.assert_array_equal(got_v.view(np.uint8), got_s.view(np.uint8),
                                  err_msg="lanes and scalar code must agree bit for bit")
    err = ulp_error(got_v, ref, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[dtype], f"{name}({x[worst]!r}) = {got_v[worst]!r}, numpy {ref[worst]!r}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ieee_specials(dtype):
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=dtype)
    for name, f in REFS.items():
        if name == "log1p_unit":       # [0, 1] and NaN only
            specials_in = np.array([np.nan, 0.0, 1.0], dtype=dtype)
            got = kernel(name, dtype, 1)(specials_in, 1)
            np.testing.assert_array_equal(got, np.log1p(specials_in), err_msg=name)
            continue
        got = kernel(name, dtype, 1)(specials, 1)
        with np.errstate(all="ignore"):
            ref = f(specials)
        np.testing.assert_array_equal(got, ref, err_msg=name)
