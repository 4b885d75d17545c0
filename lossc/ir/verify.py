"""The IR verifier: structural invariants every pass must keep."""
from __future__ import annotations

from lossc.ir.graph import Graph
from lossc.ir.ops import OPS


class VerifyError(AssertionError):
    pass


def verify(graph: Graph) -> None:
    """Ids unique; every input defined before use; shapes and dtypes agree with the op
    table; arities right; every output a node of the graph."""
    seen: dict[int, object] = {}
    for n in graph.nodes:
        if n.id in seen:
            raise VerifyError(f"%{n.id} defined twice")
        d = OPS.get(n.op)
        if d is None:
            raise VerifyError(f"%{n.id}: unknown op {n.op!r}")
        if d.arity is not None and len(n.inputs) != d.arity:
            raise VerifyError(f"%{n.id}: {n.op} takes {d.arity} inputs, has {len(n.inputs)}")
        for i in n.inputs:
            if seen.get(i.id) is not i:
                raise VerifyError(f"%{n.id} uses %{i.id} before its definition")
        try:
            shape, dtype = d.infer(dict(n.attrs), *n.inputs)
        except AssertionError as e:
            raise VerifyError(f"%{n.id}: {n.op}: inputs do not fit: {e}") from None
        if tuple(shape) != n.shape or dtype != n.dtype:
            raise VerifyError(f"%{n.id}: {n.op} should be {dtype}{list(shape)}, "
                              f"is {n.dtype}{list(n.shape)}")
        seen[n.id] = n
    for k, v in graph.outputs.items():
        if seen.get(v.id) is not v:
            raise VerifyError(f"output {k} is not a node of the graph")
