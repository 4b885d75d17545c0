"""A lane group: the samples one copy of the per-sample code computes, and what that
copy has computed so far.

The vector loop takes `lanes` samples at a time as the lanes of <lanes x T> vectors, and
with large gradients two such groups per iteration, each with its own copy of the
per-sample code (codegen/llvm.py). Every kernel is given the group it computes for, so
which values, buffers and input rows it reads is explicit. Values computed once per
call belong to the prologue's group (one lane, no sample); a per-sample group reads
them through its own maps (ChainMap), which fall back to the prologue's.
"""
from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from typing import Optional

from llvmlite import ir


@dataclass(eq=False)
class LaneGroup:
    lanes: int                                  # samples per vector: W, or 1
    sample: Optional[ir.Value] = None           # i64: the group's first sample
    values: dict = field(default_factory=dict)  # node id -> SSA value (scalar or vector)
    buffers: dict = field(default_factory=dict)  # node id -> pointer into `work`
    input_rows: dict = field(default_factory=dict)  # input index -> a row pointer a lane
    live: Optional[ir.Value] = None             # <lanes x i1>: the lanes holding samples
    # the groups of this iteration, this one included, in order (a kernel may compute
    # a node for all of them at once: codegen/matvec.py)
    iteration: list = field(default_factory=list)

    @staticmethod
    def once() -> "LaneGroup":
        """The prologue's group: values computed once per call."""
        g = LaneGroup(lanes=1)
        g.iteration.append(g)
        return g

    def per_sample(self, lanes: int, sample, iteration: list) -> "LaneGroup":
        """A group of the vector or scalar loop: reads this group's (the prologue's)
        values and buffers, keeps its own."""
        g = LaneGroup(lanes, sample, ChainMap({}, self.values), ChainMap({}, self.buffers),
                      {}, None, iteration)
        iteration.append(g)
        return g
