"""Dead-code elimination: keep only the nodes some output depends on."""
from __future__ import annotations

from lossc.ir.graph import Graph


def dce(graph: Graph) -> Graph:
    """Nodes not reachable from an output are dropped; order is preserved."""
    live = graph.reachable(graph.outputs.values())
    out = Graph()
    out.copy_meta_from(graph)
    out.nodes = [n for n in graph.nodes if n.id in live]
    out.outputs = dict(graph.outputs)
    return out
