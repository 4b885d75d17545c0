"""The op table: every primitive's facts in one place (`OpDef`, ops/base.py says what
each fact is).

Entries are grouped by family, one module each: leaves, elementwise (functions,
arithmetic, comparisons, `where`, integer index arithmetic), views, tensors
(reductions, softmax, matmul), and lowered (the lower pass's fused ops). OPS gathers
them, in that order, by name; nothing registers itself anywhere else. Adding an op
means adding its entry to its family's list: the language's function names (build.py,
the parser), the LaTeX forms, the external functions its code may call, the fusion and
folding rules and the table tests all read it from here, and tests/test_ops.py fails
for an entry that lacks a fact.
"""
from __future__ import annotations

from lossc.ir.ops import elementwise, leaves, lowered, tensors, views
from lossc.ir.ops.base import ANY, MISSING, POS, UNIT, Example, Math, OpDef, const_value

OPS: dict[str, OpDef] = {}
for _d in leaves.OPS + elementwise.OPS + views.OPS + tensors.OPS + lowered.OPS:
    assert _d.name not in OPS, _d.name
    OPS[_d.name] = _d


def surface_names() -> frozenset:
    """The functions of the language that are ops (build.py adds the derived ones)."""
    return frozenset(name for d in OPS.values() for name in d.names)


__all__ = ["ANY", "MISSING", "OPS", "POS", "UNIT", "Example", "Math", "OpDef", "const_value",
           "surface_names"]
