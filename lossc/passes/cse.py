"""Common-subexpression elimination by hash-consing.

Invariant after the pass: no two nodes have the same op, inputs and attributes. The
graph is rebuilt through a sharing `Builder`, which returns the existing node for a
request it has seen, so a repeated computation collapses into its first occurrence.
"""
from __future__ import annotations

from lossc.ir.graph import Graph, transform


def cse(graph: Graph) -> Graph:
    return transform(graph, lambda b, n, xs: None, share=True)
