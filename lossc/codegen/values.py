"""Emitting scalar-or-vector values: the arithmetic every lowering rule uses.

A value is a scalar or a <W x T> vector whose lanes are W samples. Every helper here
accepts a mix and splats the scalars (values computed once per call) to the vectors'
width, so a lowering rule is written once for both.
"""
from __future__ import annotations

import struct
from contextlib import contextmanager

from llvmlite import ir

from lossc.codegen import externals, vmath

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
I8P = ir.IntType(8).as_pointer()
CONTRACT = ("contract",)
FAST = ("reassoc", "contract")   # only for batch and tensor reductions (see docs/language.md)

# LLVM intrinsics; the functions in vmath are emitted inline; the rest are libm calls
# (tanf etc. for float32), one per lane on vectors. codegen/externals.py holds the
# lists: the loaders resolve no other external function.
_INTRINSICS = set(externals.INTRINSICS)
_LIBM = set(externals.LIBM)


def declared(module: ir.Module, name: str, ret, args: list) -> ir.Function:
    """A function of the module (an LLVM intrinsic, a C library routine), declared the
    first time it is asked for."""
    return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, args),
                                                   name=name)


@contextmanager
def counted_loop(b: ir.IRBuilder, fn: ir.Function, start, stop, step: int = 1):
    """for i in range(start, stop, step) (step a nonzero int): the body is whatever the
    with-block emits. Signed comparisons: an empty range runs nothing."""
    pre = b.block
    header = fn.append_basic_block("loop")
    body = fn.append_basic_block("body")
    done = fn.append_basic_block("done")
    b.branch(header)
    b.position_at_end(header)
    i = b.phi(I64, name="i")
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<" if step > 0 else ">", i, stop), body, done)
    b.position_at_end(body)
    yield i
    i.add_incoming(b.add(i, ir.Constant(I64, step)), b.block)
    b.branch(header)
    b.position_at_end(done)


def is_vector(v) -> bool:
    return isinstance(v.type, ir.VectorType)


def is_vector_type(t) -> bool:
    return isinstance(t, ir.VectorType)


class ValueEmitter:
    def __init__(self, module: ir.Module, T, builder: ir.IRBuilder | None = None):
        self.module = module
        self.T = T
        self.suffix = "" if isinstance(T, ir.DoubleType) else "f"
        self.T_bytes = 8 if isinstance(T, ir.DoubleType) else 4
        if builder is not None:
            self.b = builder

    def in_type(self, T) -> "ValueEmitter":
        """An emitter for another real type, into the same module and builder (vmath's
        float32 functions computed in float64)."""
        return ValueEmitter(self.module, T, self.b)

    # Constants are made once per emitter and reused: llvmlite formats a constant's text
    # once per object, and a vector constant's text is W numbers in hex (a model's
    # splatted constants are a quarter of its IR text)

    def _constants(self) -> dict:
        return self.__dict__.setdefault("_made", {})

    def fconst(self, v) -> ir.Value:
        # (keyed by the bits: -0.0 is not 0.0, and NaNs keep their payloads)
        key = struct.pack("<d", v)
        made = self._constants()
        c = made.get(key)
        if c is None:
            c = made[key] = ir.Constant(self.T, float(v))
        return c

    def iconst(self, v) -> ir.Value:
        if type(v) is not int:       # (bool, NumPy integers: made each time)
            return ir.Constant(I64, int(v))
        made = self._constants()
        c = made.get(v)
        if c is None:
            c = made[v] = ir.Constant(I64, v)
        return c

    def splat(self, v, width: int):
        if width == 1 or is_vector(v):
            return v
        vt = ir.VectorType(v.type, width)
        if isinstance(v, ir.Constant):
            made = self._constants()
            key = (v.get_reference(), str(v.type), width)
            c = made.get(key)
            if c is None:
                c = made[key] = ir.Constant(vt, [v.constant] * width)
            return c
        one = self.b.insert_element(ir.Constant(vt, None), v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, ir.Constant(vt, None),
                                     ir.Constant(ir.VectorType(I32, width), [0] * width))

    def vector_of(self, scalars: list) -> ir.Value:
        """A vector whose lane k is scalars[k]."""
        out = ir.Constant(ir.VectorType(scalars[0].type, len(scalars)), None)
        for k, s in enumerate(scalars):
            out = self.b.insert_element(out, s, ir.Constant(I32, k))
        return out

    def unify(self, *vals):
        width = max((v.type.count for v in vals if is_vector(v)), default=1)
        return [self.splat(v, width) for v in vals]

    def _binary(name, default_flags=()):
        def f(self, x, y, flags=default_flags):
            x, y = self.unify(x, y)
            method = getattr(self.b, name)
            return method(x, y, flags=flags) if flags else method(x, y)
        return f

    # `contract` lets LLVM fuse a multiply and an add into one FMA (one rounding instead
    # of two); no other fast-math freedom is taken: inf and nan keep their meaning
    fadd, fsub, fmul = _binary("fadd", CONTRACT), _binary("fsub", CONTRACT), _binary("fmul", CONTRACT)
    fdiv = _binary("fdiv")
    and_, or_ = _binary("and_"), _binary("or_")
    add, sub, mul = _binary("add"), _binary("sub"), _binary("mul")

    def fneg(self, x):
        return self.b.fneg(x)

    def not_(self, x):
        return self.b.not_(x)

    def neg(self, x):
        return self.b.neg(x)

    def select(self, c, a, b):
        a, b = self.unify(a, b)
        if is_vector(c):
            a, b = self.splat(a, c.type.count), self.splat(b, c.type.count)
        return self.b.select(c, a, b)

    def fcmp(self, sym: str, a, b):
        a, b = self.unify(a, b)
        if sym == "!=":
            return self.b.fcmp_unordered("!=", a, b)
        return self.b.fcmp_ordered(sym, a, b)

    def icmp(self, sym: str, a, b):
        a, b = self.unify(a, b)
        return self.b.icmp_signed(sym, a, b)

    def past_expm1_2abs_clamp(self, x):
        """|x| > the clamp of vmath.expm1_2abs (the same comparison, which LLVM shares)."""
        return self.fcmp(">", self.math("fabs", x),
                         self.fconst(vmath.expm1_2abs_clamp(self.T)))

    def to_real(self, x):
        t = ir.VectorType(self.T, x.type.count) if is_vector(x) else self.T
        return self.b.sitofp(x, t)

    def math(self, name: str, *args):
        args = self.unify(*args)
        if name in vmath.FUNCTIONS:
            if is_vector(args[0]):     # the hot loops: inline, for LLVM to schedule
                return getattr(vmath, name)(self, *args)
            return self.b.call(self.vmath_function(name, args[0].type), list(args))
        ty = args[0].type
        if name in _INTRINSICS:
            return self.b.call(self.intrinsic(name, ty, len(args)), list(args))
        assert name in _LIBM, name
        fname = name + self.suffix
        f = self.module.globals.get(fname)
        if f is None:
            f = ir.Function(self.module, ir.FunctionType(self.T, [self.T] * len(args)),
                            name=fname)
            f.attributes.add("nounwind")
        if not is_vector(args[0]):
            return self.b.call(f, list(args))
        # no vector libm here: one call per lane
        return self.vector_of([self.b.call(f, [self.b.extract_element(a, self.iconst(k))
                                               for a in args]) for k in range(ty.count)])

    def vmath_function(self, name: str, ty) -> ir.Function:
        """vmath's `name` for scalars, emitted once per module as a function of its own:
        the scalar code (remainder loops, once-per-call values) calls exp and log from
        many places, and one out-of-line copy cuts LLVM's work (compile time) without
        slowing the vector loops, where the same code is inlined."""
        suffix = f"v{ty.count}" if is_vector_type(ty) else "s"
        base = ty.element if is_vector_type(ty) else ty
        fname = f"lossc_{name}_{suffix}{'f64' if isinstance(base, ir.DoubleType) else 'f32'}"
        f = self.module.globals.get(fname)
        if f is None:
            f = ir.Function(self.module, ir.FunctionType(ty, [ty]), name=fname)
            f.linkage = "internal"
            f.attributes.add("nounwind")
            f.attributes.add("noinline")
            inner = ValueEmitter(self.module, self.T, ir.IRBuilder(f.append_basic_block()))
            inner.b.ret(getattr(vmath, name)(inner, f.args[0]))
        return f

    def intrinsic(self, name: str, ty, nargs: int):
        """llvm.<name>.<type suffix>, e.g. llvm.exp.v8f64, declared once per module."""
        base = ty.element if is_vector_type(ty) else ty
        suffix = "f64" if isinstance(base, ir.DoubleType) else "f32"
        if is_vector_type(ty):
            suffix = f"v{ty.count}{suffix}"
        fname = f"llvm.{name}.{suffix}"
        f = self.module.globals.get(fname)
        if f is None:
            f = ir.Function(self.module, ir.FunctionType(ty, [ty] * nargs), name=fname)
        return f

    def powi(self, x, n: int):
        result, base, k = None, x, abs(n)
        while k:
            if k & 1:
                result = base if result is None else self.fmul(result, base)
            k >>= 1
            if k:
                base = self.fmul(base, base)
        if result is None:
            result = self.fconst(1)
        return self.fdiv(self.fconst(1), result) if n < 0 else result
