"""The pure-Python ELF loader (lossc/runtime/elf.py): objects compiled from hand-written
IR that make LLVM emit each kind of section and relocation, checked against values
computed in Python and against MCJIT; every sample model, bit for bit against MCJIT;
and objects it must refuse with ElfLoadError."""
import ctypes
import json
import math
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from lossc.runtime.elf import ElfCode, ElfLoadError, supported

if not supported():
    pytest.skip("the ELF loader runs on Linux x86-64 only", allow_module_level=True)

import llvmlite.binding as llvm  # noqa: E402

import lossc  # noqa: E402
import lossc.runtime.code  # noqa: E402
from conftest import CONFORMANCE, ROOT, SAMPLES  # noqa: E402
from lossc.codegen.externals import ALLOWED  # noqa: E402
from lossc.codegen.jit import NativeCode, compile_ir, new_target_machine, parse  # noqa: E402
from lossc.codegen.units import (EXPORTS, LIBRARY_UNITS, LOSS, UNITS,  # noqa: E402
                                 VALUE_AND_GRAD)
from lossc.compiler import compile_source  # noqa: E402
from lossc.runtime import library  # noqa: E402
from lossc.runtime.artifact import ArtifactError  # noqa: E402
from lossc.runtime.native import load_object  # noqa: E402
from lossc.runtime.symbols import SymbolError, check_externals, external_symbols  # noqa: E402
from lossc.optim import load_data  # noqa: E402
from lossc.runtime.code import ModelCode  # noqa: E402
from lossc.runtime.model import Model  # noqa: E402

SAMPLE_NAMES = sorted(p.stem for p in SAMPLES.glob("*.loss"))


def emit(ir: str, tm=None) -> bytes:
    """An object file from IR, made as lossc makes its own (the TargetMachine of
    lossc.codegen.jit: host CPU and features, reloc="pic", codemodel="default") unless
    `tm` is given; no IR optimization, so each construct reaches code generation as
    written."""
    tm = tm or new_target_machine()
    mod = parse(ir)
    mod.triple = llvm.get_process_triple()
    mod.data_layout = str(tm.target_data)
    return tm.emit_object(mod)


def linked(ir: str, names) -> list:
    """The object from `ir` loaded by ElfCode and by MCJIT (each kept alive by the
    test's reference to it)."""
    obj = emit(ir)
    return [ElfCode(obj, tuple(names)), NativeCode(obj, tuple(names))]


def function(code, name: str, restype, *argtypes):
    return ctypes.CFUNCTYPE(restype, *argtypes)(code.addresses[name])


def dlsym(name: str) -> int:
    return ctypes.cast(ctypes.CDLL(None)[name], ctypes.c_void_p).value


def doubles(values) -> ctypes.Array:
    return (ctypes.c_double * len(values))(*values)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


# ------------------------------------------------------------ hand-written IR

INTERNAL_CALL = """
define internal i64 @square_plus_7(i64 %x) noinline section ".text.helper" {
  %s = mul i64 %x, %x
  %r = add i64 %s, 7
  ret i64 %r
}
define i64 @difference(i64 %a, i64 %b) {
  %x = call i64 @square_plus_7(i64 %a)
  %y = call i64 @square_plus_7(i64 %b)
  %r = sub i64 %x, %y
  ret i64 %r
}
"""


def test_call_to_an_internal_function_in_another_section():
    for code in linked(INTERNAL_CALL, ["difference"]):
        f = function(code, "difference", ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
        for a, b in [(0, 0), (3, 4), (-1000, 12), (123456, -7)]:
            assert f(a, b) == (a * a + 7) - (b * b + 7)


CONSTANTS = """
define double @poly(double %x) {
  %a = fmul double %x, 3.25
  %b = fadd double %a, -1.125
  %c = fmul double %b, %x
  %d = fadd double %c, 0.1
  ret double %d
}
define float @polyf(float %x) {
  %a = fmul float %x, 0x3FF8000000000000
  %b = fadd float %a, 0x3FB99999A0000000
  ret float %b
}
define void @affine4(ptr %out, ptr %in) {
  %v = load <4 x double>, ptr %in, align 8
  %m = fmul <4 x double> %v, <double 1.5, double -2.0, double 0.25, double 3.0>
  %a = fadd <4 x double> %m, <double 0.1, double 0.2, double 0.3, double 0.4>
  store <4 x double> %a, ptr %out, align 8
  ret void
}
define void @affine8f(ptr %out, ptr %in) {
  %v = load <8 x float>, ptr %in, align 4
  %m = fmul <8 x float> %v, <float 1.0, float 2.0, float 3.0, float 4.0,
                             float 5.0, float 6.0, float 7.0, float 8.0>
  %a = fadd <8 x float> %m, <float 0.5, float 0.25, float 0.125, float 1.5,
                             float 2.5, float -0.5, float -1.0, float 9.0>
  store <8 x float> %a, ptr %out, align 4
  ret void
}
"""


def test_scalar_and_vector_constants_from_constant_pools():
    xs = [0.0, 1.0, -2.5, 3.141592653589793, 1e-300, 7e12]
    v = [0.7, -1.3, 2.9, 1e10]
    vf = np.array([0.1, -0.2, 0.3, 4.0, -5.5, 6.25, 7.0, 1e-3], dtype=np.float32)
    for code in linked(CONSTANTS, ["poly", "polyf", "affine4", "affine8f"]):
        poly = function(code, "poly", ctypes.c_double, ctypes.c_double)
        for x in xs:
            assert bits(poly(x)) == bits(((x * 3.25) + -1.125) * x + 0.1)
        polyf = function(code, "polyf", ctypes.c_float, ctypes.c_float)
        for x in np.float32(xs):
            assert np.float32(polyf(float(x))) == x * np.float32(1.5) + np.float32(0.1)
        out = doubles([0.0] * 4)
        function(code, "affine4", None, ctypes.c_void_p, ctypes.c_void_p)(out, doubles(v))
        want = [a * m + c for a, m, c in zip(v, [1.5, -2.0, 0.25, 3.0], [0.1, 0.2, 0.3, 0.4])]
        assert list(out) == want
        outf = np.zeros(8, dtype=np.float32)
        function(code, "affine8f", None, ctypes.c_void_p, ctypes.c_void_p)(
            outf.ctypes.data, vf.ctypes.data)
        mul = np.arange(1, 9, dtype=np.float32)
        add = np.array([0.5, 0.25, 0.125, 1.5, 2.5, -0.5, -1.0, 9.0], dtype=np.float32)
        assert np.array_equal(outf, vf * mul + add)


GLOBALS = """
@primes = internal constant [8 x i64] [i64 2, i64 3, i64 5, i64 7, i64 11, i64 13, i64 17,
                                       i64 19]
@weights = private unnamed_addr constant [5 x double] [double 0.5, double -1.25,
                                       double 2.0, double 1.0e-3, double 7.75]
@counter = global i64 0
@calls = internal global i64 1000

define i64 @prime(i64 %i) {
  %p = getelementptr [8 x i64], ptr @primes, i64 0, i64 %i
  %v = load i64, ptr %p
  ret i64 %v
}
define double @weighted(ptr %x) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %acc = phi double [0.0, %entry], [%sum, %loop]
  %wp = getelementptr [5 x double], ptr @weights, i64 0, i64 %i
  %w = load double, ptr %wp
  %xp = getelementptr double, ptr %x, i64 %i
  %xv = load double, ptr %xp
  %t = fmul double %w, %xv
  %sum = fadd double %acc, %t
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, 5
  br i1 %done, label %exit, label %loop
exit:
  ret double %sum
}
define i64 @bump(i64 %by) {
  %c = load i64, ptr @counter
  %n = add i64 %c, %by
  store i64 %n, ptr @counter
  %k = load i64, ptr @calls
  %k1 = add i64 %k, 1
  store i64 %k1, ptr @calls
  ret i64 %n
}
define i64 @calls_so_far() {
  %k = load i64, ptr @calls
  ret i64 %k
}
define ptr @counter_address() {
  ret ptr @counter
}
"""
GLOBAL_FUNCTIONS = ["prime", "weighted", "bump", "calls_so_far", "counter_address"]


def test_read_only_global_arrays():
    primes = [2, 3, 5, 7, 11, 13, 17, 19]
    weights = [0.5, -1.25, 2.0, 1.0e-3, 7.75]
    x = [1.5, 2.0, -3.0, 400.0, 0.125]
    want = 0.0
    for w, v in zip(weights, x):
        want += w * v
    for code in linked(GLOBALS, GLOBAL_FUNCTIONS):
        prime = function(code, "prime", ctypes.c_int64, ctypes.c_int64)
        assert [prime(i) for i in range(8)] == primes
        weighted = function(code, "weighted", ctypes.c_double, ctypes.c_void_p)
        assert bits(weighted(doubles(x))) == bits(want)


def test_writable_globals_keep_their_values_between_calls():
    # @counter is zero-initialized (.bss) and, not being dso_local, reached through
    # the GOT; @calls starts at 1000 (.data)
    for code in linked(GLOBALS, GLOBAL_FUNCTIONS):
        bump = function(code, "bump", ctypes.c_int64, ctypes.c_int64)
        calls = function(code, "calls_so_far", ctypes.c_int64)
        counter = function(code, "counter_address", ctypes.c_void_p)()
        assert calls() == 1000
        assert bump(5) == 5
        assert bump(37) == 42
        assert calls() == 1002
        assert ctypes.c_int64.from_address(counter).value == 42


def _protections(address: int) -> str:
    """The permissions of the mapping that holds `address` (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if int(m[1], 16) <= address < int(m[2], 16):
                return m[3]
    raise AssertionError(f"{address:#x} is not mapped")


def test_code_is_executable_constants_read_only_and_data_writable():
    code = ElfCode(emit(GLOBALS), tuple(GLOBAL_FUNCTIONS))
    assert _protections(code.addresses["prime"]) == "r-xp"
    counter = function(code, "counter_address", ctypes.c_void_p)()
    assert _protections(counter) == "rw-p"
    # prime's first instructions load the table's address PC-relative: lea disp(%rip)
    text = ctypes.string_at(code.addresses["prime"], 64)
    lea = re.search(rb"\x48\x8d[\x05\x0d\x15\x1d\x35\x3d](....)", text, re.DOTALL)
    assert lea, text.hex()
    table = code.addresses["prime"] + lea.end() + struct.unpack("<i", lea[1])[0]
    assert _protections(table) == "r--p"
    assert struct.unpack("<8q", ctypes.string_at(table, 64)) == (2, 3, 5, 7, 11, 13, 17, 19)
    code.close()
    assert code.functions == {} and code.addresses == {}
    code.close()        # a second close does nothing


POINTERS = """
define internal i64 @twice(i64 %x) noinline {
  %r = mul i64 %x, 2
  ret i64 %r
}
define internal i64 @thrice(i64 %x) noinline {
  %r = mul i64 %x, 3
  ret i64 %r
}
@table = internal constant [2 x ptr] [ptr @twice, ptr @thrice]
@target = internal global i64 42
@offset = internal constant i64 sub (i64 ptrtoint (ptr @target to i64),
                                     i64 ptrtoint (ptr @offset to i64))

define i64 @dispatch(i64 %i, i64 %x) {
  %p = getelementptr [2 x ptr], ptr @table, i64 0, i64 %i
  %f = load ptr, ptr %p
  %r = call i64 %f(i64 %x)
  ret i64 %r
}
define i64 @follow() {
  %d = load i64, ptr @offset
  %here = ptrtoint ptr @offset to i64
  %there = add i64 %here, %d
  %p = inttoptr i64 %there to ptr
  %v = load i64, ptr %p
  ret i64 %v
}
"""


def test_function_pointer_table_and_relative_offset_in_data():
    # the table holds absolute addresses (R_X86_64_64, in .data.rel.ro: writable, as
    # a dynamic linker would patch it); @offset a 64-bit PC-relative one (R_X86_64_PC64)
    for code in linked(POINTERS, ["dispatch", "follow"]):
        dispatch = function(code, "dispatch", ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
        assert (dispatch(0, 7), dispatch(1, 7), dispatch(1, -5)) == (14, 21, -15)
        assert function(code, "follow", ctypes.c_int64)() == 42


def _static_target_machine():
    """Code for a fixed position in the low 2 GB: absolute 32-bit addresses."""
    parse("")       # initializes the native target
    return llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
        opt=2, reloc="static", codemodel="small")


ADDRESS_AS_I32 = """
@x = internal global i64 5
define i32 @low_address() {
  %a = ptrtoint ptr @x to i32
  ret i32 %a
}
"""


@pytest.mark.parametrize("ir", [GLOBALS, ADDRESS_AS_I32], ids=["32S", "32"])
def test_absolute_32_bit_addresses_that_do_not_fit_are_refused(ir):
    # R_X86_64_32S (prime's table lookup) and R_X86_64_32 (the address as an i32): the
    # mapping lies far above 4 GB
    with pytest.raises(ElfLoadError, match="does not fit 32 bits"):
        ElfCode(emit(ir, _static_target_machine()), ())


EXTERNALS = """
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare double @tan(double)
declare double @atan(double)

define void @copy(ptr %dst, ptr %src, i64 %n) {
  call void @llvm.memcpy.p0.p0.i64(ptr %dst, ptr %src, i64 %n, i1 false)
  ret void
}
define void @tan_atan(ptr %out, double %x) {
  %a = call double @tan(double %x)
  %b = call double @atan(double %x)
  store double %a, ptr %out
  %p = getelementptr double, ptr %out, i64 1
  store double %b, ptr %p
  ret void
}
define double @tail_tan(double %x) {
  %r = tail call double @tan(double %x)
  ret double %r
}
define void @tan_address(ptr %out) {
  store ptr @tan, ptr %out
  ret void
}
"""


def test_calls_to_memcpy_and_libm():
    src = bytes(range(256)) * 4
    for code in linked(EXTERNALS, ["copy", "tan_atan", "tail_tan"]):
        dst = ctypes.create_string_buffer(len(src))
        function(code, "copy", None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64)(
            dst, src, len(src))
        assert dst.raw == src
        both = function(code, "tan_atan", None, ctypes.c_void_p, ctypes.c_double)
        tail = function(code, "tail_tan", ctypes.c_double, ctypes.c_double)
        for x in [0.0, 0.5, -0.75, 3.0, 1e-8, 20.0]:
            out = doubles([0.0, 0.0])
            both(out, x)
            assert bits(out[0]) == bits(math.tan(x))
            assert bits(out[1]) == bits(math.atan(x))
            assert bits(tail(x)) == bits(math.tan(x))


def test_address_of_an_external_function_is_its_real_address():
    for code in linked(EXTERNALS, ["tan_address"]):
        out = ctypes.c_void_p()
        function(code, "tan_address", None, ctypes.c_void_p)(ctypes.byref(out))
        assert out.value == dlsym("tan")


def _switch_ir(cases: int) -> str:
    labels = " ".join(f"i64 {k}, label %c{k}" for k in range(cases))
    blocks = "\n".join(f"c{k}:\n  %v{k} = mul i64 %x, {3 * k + 1}\n  %r{k} = xor i64 %v{k}, "
                       f"{k * k}\n  ret i64 %r{k}" for k in range(cases))
    return f"""
define i64 @pick(i64 %k, i64 %x) {{
entry:
  switch i64 %k, label %other [ {labels} ]
{blocks}
other:
  ret i64 -1
}}
"""


def test_switch_through_a_jump_table():
    # a jump table lives in .rodata and holds PC-relative offsets into .text
    cases = 24
    for code in linked(_switch_ir(cases), ["pick"]):
        pick = function(code, "pick", ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
        for k in range(-2, cases + 2):
            for x in (1, 1000003):
                want = (x * (3 * k + 1)) ^ (k * k) if 0 <= k < cases else -1
                assert pick(k, x) == want


WIDE_VECTORS = """
declare <8 x double> @llvm.sqrt.v8f64(<8 x double>)

define void @wide(ptr %out, ptr %a, ptr %b, i64 %n) {
entry:
  %empty = icmp eq i64 %n, 0
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %pa = getelementptr double, ptr %a, i64 %i
  %pb = getelementptr double, ptr %b, i64 %i
  %va = load <8 x double>, ptr %pa, align 8
  %vb = load <8 x double>, ptr %pb, align 8
  %m = fmul <8 x double> %va, <double 1.5, double -2.0, double 0.25, double 3.0,
                               double 1.0e-3, double 7.0, double -0.5, double 11.0>
  %s = fadd <8 x double> %m, %vb
  %sq = fmul <8 x double> %s, %s
  %sq1 = fadd <8 x double> %sq, <double 1.0, double 1.0, double 1.0, double 1.0,
                                 double 1.0, double 1.0, double 1.0, double 1.0>
  %r = call <8 x double> @llvm.sqrt.v8f64(<8 x double> %sq1)
  %d = fdiv <8 x double> %s, %r
  %neg = fcmp olt <8 x double> %d, zeroinitializer
  %flip = fneg <8 x double> %d
  %abs = select <8 x i1> %neg, <8 x double> %flip, <8 x double> %d
  %e = fsub <8 x double> %abs, %va
  %po = getelementptr double, ptr %out, i64 %i
  store <8 x double> %e, ptr %po, align 8
  %next = add i64 %i, 8
  %more = icmp ult i64 %next, %n
  br i1 %more, label %loop, label %exit
exit:
  ret void
}
"""


def test_wide_float64_vector_code():
    # <8 x double> is one zmm register where the CPU has AVX-512, two ymm otherwise
    rng = np.random.default_rng(0)
    n = 64
    a, b = rng.normal(size=n) * 10, rng.normal(size=n)
    mul = np.tile([1.5, -2.0, 0.25, 3.0, 1.0e-3, 7.0, -0.5, 11.0], n // 8)
    s = a * mul + b
    want = np.abs(s / np.sqrt(s * s + 1.0)) - a
    for code in linked(WIDE_VECTORS, ["wide"]):
        out = np.zeros(n)
        function(code, "wide", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                 ctypes.c_int64)(out.ctypes.data, a.ctypes.data, b.ctypes.data, n)
        assert out.tobytes() == want.tobytes()


# ------------------------------------------------------------ real lossc objects

def _random_inputs(m, rng, batch: int) -> dict:
    int_high = min((c["size"] for c in m.meta["index_checks"]), default=1)
    return {s.name: (rng.integers(0, int_high, size=(batch,) + s.shape) if s.is_int else
                     rng.normal(size=(batch,) + s.shape).astype(m.dtype))
            for s in m.inputs}


def _loaded_by(m, loader) -> Model:
    """m with every code unit's object file loaded by `loader` (ElfCode or MCJIT's
    NativeCode, never a silent fallback from one to the other)."""
    objects = m.code.complete()
    header = dict(m.meta, work_size=m.code.work_size)
    code = ModelCode(header, objects, m.code._compile_unit, m.options)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lossc.runtime.code, "load_object",
                      lambda obj, names, _options_loader: loader(obj, names))
        for unit in UNITS:
            code.function(unit)
    return Model(m.signature, m.dtype.name, code, header, m.options)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes()
                                        for k in a)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_model_matches_mcjit_bit_for_bit(name, dtype):
    m = lossc.compile(SAMPLES / f"{name}.loss", dtype=dtype, cache=False)
    by_mcjit, by_elf = _loaded_by(m, NativeCode), _loaded_by(m, ElfCode)
    rng = np.random.default_rng(1)
    batches = [_random_inputs(m, rng, 37) for _ in range(3)]
    if (SAMPLES / "data" / f"{name}.csv").exists():
        data = load_data(SAMPLES / "data" / f"{name}.csv", m)
        batches.append({k: v[:100] for k, v in data.items()})
    for seed, inputs in enumerate(batches):
        theta = {k: (v + rng.normal(size=v.shape) * 0.3).astype(m.dtype)
                 for k, v in m.init_params(seed).items()}
        value, grad = by_mcjit.value_and_grad(theta, **inputs)
        value2, grad2 = by_elf.value_and_grad(theta, **inputs)
        assert bits(value2) == bits(value)
        assert _same(grad2, grad)
        assert bits(by_elf.loss(theta, **inputs)) == bits(by_mcjit.loss(theta, **inputs))


@pytest.mark.parametrize("optimizer", [lossc.Adam(lr=1e-2), lossc.SGD(lr=1e-2, momentum=0.9),
                                       lossc.RMSprop(lr=1e-3)], ids=lambda o: type(o).__name__)
def test_fused_training_matches_mcjit(optimizer):
    """lossc_train_steps_* call the gradient, in another object, through its address
    (and Adam's call libm's pow)."""
    m = lossc.compile(SAMPLES / "logistic.loss", cache=False)
    data = load_data(SAMPLES / "data" / "logistic.csv", m)
    calls = []

    def counted_elf_code(obj, names):
        code = ElfCode(obj, names)
        for name, fn in code.functions.items():
            code.functions[name] = lambda frame, fn=fn, name=name: calls.append(name) or fn(frame)
        return code

    runs = [lossc.train(_loaded_by(m, loader), data=data, optimizer=optimizer, batch_size=8,
                        epochs=2, seed=0) for loader in (NativeCode, counted_elf_code)]
    assert any(name.startswith("lossc_train_steps") for name in calls)
    assert _same(runs[1].params, runs[0].params)
    assert runs[1].history == runs[0].history


# ------------------------------------------------------------ what it must refuse

def _lossc_object(sample: str, unit: str = VALUE_AND_GRAD) -> tuple[bytes, tuple[str]]:
    """A code unit's object file and its exported name."""
    m = lossc.compile(SAMPLES / f"{sample}.loss", cache=False)
    return m.code.complete()[unit], (EXPORTS[unit],)


def test_truncated_or_garbage_objects_are_refused():
    obj, names = _lossc_object("logistic")
    cuts = sorted({0, 4, 16, 63, 64, 100, len(obj) // 2, len(obj) - 64, len(obj) - 1})
    for cut in cuts:
        with pytest.raises(ElfLoadError):
            ElfCode(obj[:cut], names)
    rng = np.random.default_rng(0)
    for size in (0, 10, 64, 4096, len(obj)):
        with pytest.raises(ElfLoadError):
            ElfCode(rng.bytes(size), names)
    # a valid header in front of garbage
    with pytest.raises(ElfLoadError):
        ElfCode(obj[:64] + rng.bytes(len(obj) - 64), names)


@pytest.mark.parametrize("unit", [VALUE_AND_GRAD, "train.adam"])
def test_damaged_objects_never_crash(unit):
    """Random byte changes to a real object: each load either refuses with ElfLoadError
    or succeeds; none may crash or write outside the mapping. (What a damaged object
    computes when called is another matter: this never calls it.)"""
    obj, names = _lossc_object("logistic", unit)
    rng = np.random.default_rng(0)
    section_headers = struct.unpack_from("<Q", obj, 0x28)[0]
    # every other trial damages the ELF header or the tables after the code and data
    # (symbols, relocations, section headers), where a bad value is most dangerous
    tables = np.r_[0:64, len(obj) // 2:len(obj), section_headers:len(obj)]
    for trial in range(400):
        damaged = bytearray(obj)
        for at in rng.choice(tables if trial % 2 else len(obj), size=1 + trial % 4):
            damaged[at] = int(rng.integers(256))
        try:
            ElfCode(bytes(damaged), names).close()
        except ElfLoadError:
            pass


# damages one code unit's object 300 times, loads each with load_object and prints
# how many loaded and how many were refused; anything else stops it
_FUZZ_LOADS = """
import random, struct, sys
import lossc
from lossc.codegen.units import EXPORTS
from lossc.runtime.artifact import ArtifactError
from lossc.runtime.native import load_object
unit, loader = sys.argv[1:]
obj = lossc.compile("samples/logistic.loss", cache=False).code.complete()[unit]
load_object(obj, (EXPORTS[unit],), loader)        # the object as made loads
rng = random.Random(0)
section_headers = struct.unpack_from("<Q", obj, 0x28)[0]
counts = {"loaded": 0, "refused": 0}
for trial in range(300):
    damaged = bytearray(obj)
    for _ in range(1 + trial % 4):
        # every other trial damages the ELF header or the tables after the code and
        # data (symbols, relocations, names, section headers)
        at = (rng.randrange(len(obj)) if trial % 2 else
              rng.choice([rng.randrange(64), rng.randrange(len(obj) // 2, len(obj)),
                          rng.randrange(section_headers, len(obj))]))
        damaged[at] = rng.randrange(256) if trial % 3 else damaged[at] ^ 1 << rng.randrange(8)
    try:
        load_object(bytes(damaged), (EXPORTS[unit],), loader)
        counts["loaded"] += 1
    except ArtifactError:
        counts["refused"] += 1
print(counts["loaded"], counts["refused"])
"""


@pytest.mark.parametrize("loader", ["elf", "llvm"])
@pytest.mark.parametrize("unit", [VALUE_AND_GRAD, "train.adam"])
def test_damaged_objects_are_loaded_or_refused_by_either_loader(unit, loader):
    """Random byte changes to a real object, loaded as a trusted artifact's are: each
    either loads or is an ArtifactError, in a process that must survive all 300.
    Objects lossc's loader did not take went to MCJIT, which aborted the process on
    some (an alignment that is not a power of two, thread-local data, a symbol's name
    outside its table, a relocation that overflows), 1% of them with the "elf"
    loader, half with "llvm". (What a damaged object computes is another matter:
    nothing here calls it.)"""
    run = subprocess.run([sys.executable, "-c", _FUZZ_LOADS, unit, loader], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded, refused = map(int, run.stdout.split())
    assert loaded + refused == 300 and loaded > 0 and refused > 0


def test_other_machines_and_classes_are_refused():
    obj, names = _lossc_object("seed")
    for at, value in [(4, 1), (5, 2), (16, 2), (18, 3)]:   # 32-bit, big-endian, ET_EXEC, i386
        damaged = bytearray(obj)
        damaged[at] = value
        with pytest.raises(ElfLoadError):
            ElfCode(bytes(damaged), names)


def test_missing_function_is_refused():
    obj = emit(INTERNAL_CALL)
    with pytest.raises(ElfLoadError, match="no function"):
        ElfCode(obj, ("difference", "lossc_no_such_function"))
    with pytest.raises(ElfLoadError, match="no function"):
        ElfCode(obj, ("square_plus_7",))        # internal: not a global symbol


def test_unresolvable_external_symbol_is_refused():
    obj = emit("""
declare double @lossc_no_such_symbol_xyz(double)
define double @f(double %x) {
  %r = call double @lossc_no_such_symbol_xyz(double %x)
  ret double %r
}
""")
    with pytest.raises(ElfLoadError, match="lossc_no_such_symbol_xyz"):
        ElfCode(obj, ("f",))


@pytest.mark.parametrize("ir", [
    # llvm.global_ctors: LLVM puts it in .ctors, an ordinary PROGBITS section
    """
define void @init() {
  ret void
}
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]
""",
    """
define void @init() {
  ret void
}
@table = global ptr @init, section ".ctors"
""",
    """
define void @init() section ".init" {
  ret void
}
""",
    # a priority other than 65535: .ctors.65434, an ordinary PROGBITS section too
    """
define void @init() {
  ret void
}
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 101, ptr @init, ptr null }]
""",
    """
define void @fini() {
  ret void
}
@llvm.global_dtors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 101, ptr @fini, ptr null }]
""",
], ids=["global_ctors", "ctors", "init", "ctors_priority", "dtors_priority"])
def test_objects_with_constructors_are_refused_by_every_loader(ir):
    """lossc never runs constructors; an object that has any is not lossc's."""
    obj = emit(ir + "define i32 @f() {\n  ret i32 0\n}\n")
    with pytest.raises(ElfLoadError, match="constructors or destructors"):
        ElfCode(obj, ("f",))
    for loader in ("elf", "llvm"):
        with pytest.raises(ArtifactError, match="constructors or destructors"):
            load_object(obj, ("f",), loader)


# ------------------------------------------------------------ external functions

SYSTEM_CALL = """
@command = private constant [5 x i8] c"true\\00"
declare i32 @system(ptr)
define i32 @f() {
  %r = call i32 @system(ptr @command)
  ret i32 %r
}
"""


def test_a_function_lossc_never_calls_is_refused_by_every_loader():
    obj = emit(SYSTEM_CALL)
    assert external_symbols(obj) == {"system"}
    with pytest.raises(ElfLoadError, match="'system'"):
        ElfCode(obj, ("f",))
    for loader in ("elf", "llvm"):
        with pytest.raises(ArtifactError, match="'system'"):
            load_object(obj, ("f",), loader)


def _models() -> list:
    """(path, dims) of every sample and conformance model."""
    models = [(p, None) for p in sorted(SAMPLES.glob("*.loss"))]
    for case in sorted(CONFORMANCE.glob("*.json")):
        c = json.loads(case.read_text())
        models.append((CONFORMANCE / c["model"], c["dims"] or None))
    return models


# what LLVM rewrites into other C library calls: pow of a power of two, sin and cos
REWRITTEN = ["param x = 0.5\nparam y = 2\nloss = 2 ^ x + 0.5 ^ (x * y) + sin(y) * cos(y)\n",
             "dim D = 3\ninput k: int\ninput v[D]\nparam w = 0.5\n"
             "loss = w * 2 ^ k + sum(8 ^ (w * v) + sin(v) * cos(v))\n"]


@pytest.mark.parametrize("bits", [64, 128, 256, 512])
def test_lossc_code_calls_only_the_allowed_functions(bits):
    """Every sample and conformance model, both dtypes, at each vector width (and the
    code every model shares): the functions their objects leave undefined are all in
    codegen/externals.py's list, which the loaders resolve and nothing else."""
    found = set()
    models = _models() + [(source, None) for source in REWRITTEN]
    for dtype in ("float64", "float32"):
        for source, dims in models:
            c = compile_source(source, dims, dtype)
            found |= external_symbols(compile_ir(c.unit_ir((VALUE_AND_GRAD, LOSS), bits)[0]))
        if bits == 512:            # (no vector width of their own)
            for unit in LIBRARY_UNITS:
                found |= external_symbols(library.compile_unit(unit, dtype))
    assert found <= ALLOWED, sorted(found - ALLOWED)
    assert {"exp2", "exp2f", "atan2", "atan2f", "memset"} <= found


def test_objects_for_other_systems_are_checked_too():
    """MCJIT links objects on other systems: Mach-O's symbol table (macOS, whose names
    start with an underscore) and ELF for other machines are read as well."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    source = CONFORMANCE / "elementwise.loss"
    for triple, cpu in (("x86_64-apple-macosx11.0", "haswell"), ("arm64-apple-macosx11.0",
                                                                  "apple-m1"),
                        ("aarch64-unknown-linux-gnu", "generic")):
        tm = llvm.Target.from_triple(triple).create_target_machine(
            cpu=cpu, reloc="pic", codemodel="default")
        c = compile_source(source, None, "float64")
        module = parse(c.unit_ir((VALUE_AND_GRAD,))[0])
        module.triple = triple
        found = external_symbols(tm.emit_object(module))
        assert found <= ALLOWED and {"atan2", "tan"} <= found, (triple, found)
        module = parse(SYSTEM_CALL)
        module.triple = triple
        with pytest.raises(SymbolError, match="'system'"):
            check_externals(tm.emit_object(module))


def test_damaged_objects_never_crash_the_symbol_reader():
    obj, _ = _lossc_object("logistic")
    rng = np.random.default_rng(0)
    for trial in range(300):
        damaged = bytearray(obj)
        for at in rng.choice(len(obj), size=1 + trial % 4):
            damaged[at] = int(rng.integers(256))
        cut = len(obj) if trial % 3 else int(rng.integers(len(obj)))
        try:
            external_symbols(bytes(damaged[:cut]))
        except SymbolError:
            pass
    for junk in (b"", b"\x7fELF", rng.bytes(100), b"\xcf\xfa\xed\xfe" + rng.bytes(60)):
        with pytest.raises(SymbolError):
            external_symbols(junk)
