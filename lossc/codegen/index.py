"""The run-time check of a data-dependent index (the `checked_index` op): its range,
and the overflow of the 64-bit integer arithmetic that computed it."""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import abi
from lossc.codegen.values import I1, I32, I64, declared, is_vector
from lossc.ir.graph import Node

# the overflow-reporting LLVM intrinsic of each integer op (llvm.<name>.with.overflow)
_OVERFLOW_INTRINSIC = {"iadd": "sadd", "isub": "ssub", "imul": "smul", "ineg": "ssub"}


def check_index(em, g, n: Node, i):
    """Return i, after branching out with an error if it is outside 0..size-1, or if
    the arithmetic computing it overflowed 64 bits (in any lane). err gets (check id,
    sample, value) of the first bad lane, the id as -1 - id for an overflow; the sample
    is lane group g's. (One cold block a check: a gather of a thousand rows is a
    thousand checks, and a block a lane made LLVM's work grow with the lanes.)"""
    b = em.b
    size = em.iconst(n.attr("size"))
    bad = b.icmp_unsigned(">=", i, em.splat(size, i.type.count) if is_vector(i) else size)
    overflow = index_overflow(em, g, n.inputs[0])
    if overflow is not None:
        bad = em.or_(bad, overflow)
    any_bad, lane = bad, None
    if is_vector(bad):
        mask_type = ir.IntType(bad.type.count)
        mask = b.bitcast(bad, mask_type)
        any_bad = b.icmp_unsigned("!=", mask, ir.Constant(mask_type, 0))
    with b.if_then(any_bad, likely=False):
        if is_vector(bad):
            # the lowest bad lane (the mask is not 0 here)
            cttz = declared(em.module, f"llvm.cttz.i{mask_type.width}", mask_type,
                            [mask_type, I1])
            lane = b.zext(b.call(cttz, [mask, ir.Constant(I1, 1)]), I64)

        def at_lane(v):
            return b.extract_element(v, lane) if is_vector(v) else v
        sample = em.iconst(-1) if g.sample is None else (
            g.sample if lane is None else b.add(g.sample, lane))
        check = em.iconst(n.attr("check"))
        if overflow is not None:
            check = b.select(at_lane(overflow), em.iconst(-1 - n.attr("check")), check)
        for slot, v in (("check", check), ("sample", sample), ("value", at_lane(i))):
            abi.ERROR.store(b, em.err, slot, v)
        b.ret(ir.Constant(I32, abi.INDEX_ERROR))
    return i


def index_overflow(em, g, i: Node):
    """Whether any step of the integer arithmetic computing i overflowed 64 bits: an
    i1 (a vector of them across lanes), or None for an index without arithmetic. The
    arithmetic itself wraps (the op table's lowerings); here each step is done again
    by LLVM's overflow-reporting intrinsic, which LLVM merges with it. (Iterative: the
    expression may be long.)"""
    flags: dict[int, ir.Value] = {}
    stack = [i]
    while stack:
        n = stack[-1]
        if n.id in flags or n.op not in _OVERFLOW_INTRINSIC:
            stack.pop()
            continue
        todo = [x for x in n.inputs if x.op in _OVERFLOW_INTRINSIC and x.id not in flags]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        operands = [em.elem(g, x, ()) for x in n.inputs]
        if n.op == "ineg":              # -x overflows as 0 - x does
            operands.insert(0, em.iconst(0))
        x, y = em.unify(*operands)
        name = f"llvm.{_OVERFLOW_INTRINSIC[n.op]}.with.overflow"
        fn = declared(em.module, f"{name}.{_type_suffix(x.type)}",
                      ir.LiteralStructType([x.type, _flag_type(x.type)]), [x.type, x.type])
        over = em.b.extract_value(em.b.call(fn, [x, y]), 1)
        for f in (flags[x.id] for x in n.inputs if x.id in flags):
            over = em.or_(over, f)
        flags[n.id] = over
    return flags.get(i.id)


def _type_suffix(ty) -> str:
    """An integer type's name in an intrinsic's: i64, v8i64."""
    return f"v{ty.count}i64" if isinstance(ty, ir.VectorType) else "i64"


def _flag_type(ty):
    return ir.VectorType(I1, ty.count) if isinstance(ty, ir.VectorType) else I1
