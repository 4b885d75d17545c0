"""The run-time check of a data-dependent index (the `checked_index` op): its range,
and the overflow of the 64-bit integer arithmetic that computed it."""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import abi
from lossc.codegen.values import I1, I32, declared, is_vector
from lossc.ir.graph import Node

# the overflow-reporting LLVM intrinsic of each integer op (llvm.<name>.with.overflow)
_OVERFLOW_INTRINSIC = {"iadd": "sadd", "isub": "ssub", "imul": "smul", "ineg": "ssub"}


def check_index(em, g, n: Node, i):
    """Return i, after branching out with an error if it is outside 0..size-1, or if
    the arithmetic computing it overflowed 64 bits (in any lane). err gets (check id,
    sample, value), the id as -1 - id for an overflow; the sample is lane group g's."""
    b = em.b
    size = em.iconst(n.attr("size"))
    bad = b.icmp_unsigned(">=", i, em.splat(size, i.type.count) if is_vector(i) else size)
    overflow = index_overflow(em, g, n.inputs[0])
    if overflow is not None:
        bad = em.or_(bad, overflow)
    any_bad = bad
    if is_vector(bad):
        any_bad = b.icmp_unsigned("!=", b.bitcast(bad, ir.IntType(bad.type.count)),
                                  ir.Constant(ir.IntType(bad.type.count), 0))
    with b.if_then(any_bad, likely=False):
        lanes = bad.type.count if is_vector(bad) else 1
        for lane in range(lanes):
            k = em.iconst(lane)
            lane_bad = b.extract_element(bad, k) if lanes > 1 else bad
            with b.if_then(lane_bad):
                value = b.extract_element(i, k) if lanes > 1 else i
                sample = b.add(g.sample, k) if g.sample is not None else em.iconst(-1)
                check = em.iconst(n.attr("check"))
                if overflow is not None:
                    lane_over = (b.extract_element(overflow, k) if is_vector(overflow)
                                 else overflow)
                    check = b.select(lane_over, em.iconst(-1 - n.attr("check")), check)
                for slot, v in (("check", check), ("sample", sample), ("value", value)):
                    abi.ERROR.store(b, em.err, slot, v)
                b.ret(ir.Constant(I32, abi.INDEX_ERROR))
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
