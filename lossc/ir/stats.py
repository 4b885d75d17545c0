"""`lossc graph --stats`: graph sizes per stage, rewrites, and the swell figure.

The swell figure is the number of nodes the gradient would have as an expanded
expression tree, which is what symbolic differentiation without sharing produces.
It is counted on the DAG by dynamic programming (tree size of a node = 1 + the tree
sizes of its inputs), never by building the tree, so it can reach astronomic values.
"""
from __future__ import annotations

from lossc.ir.graph import Graph


def tree_sizes(graph: Graph) -> dict[int, int]:
    size: dict[int, int] = {}
    for n in graph.nodes:  # topological order: inputs first
        size[n.id] = 1 + sum(size[i.id] for i in n.inputs)
    return size


def forward_size(graph: Graph) -> int:
    """Nodes the loss alone needs."""
    outs = [v for k, v in graph.outputs.items() if k.split(".")[0] == "loss"]
    return len(graph.reachable(outs))


def format_stats(c) -> str:
    lines = [f"{c.source.name}: graph size by stage (nodes)"]
    for name, g in c.stages.items():
        lines.append(f"  {name:<10} {len(g.nodes):>8}")
    final = c.graph
    loss_nodes = forward_size(final)
    lines.append(f"  loss alone (final graph): {loss_nodes} nodes; loss and gradient: "
                 f"{len(final.nodes)} nodes ({len(final.nodes) / max(loss_nodes, 1):.2f}x)")
    ad = c.stages.get("cse") or final
    sizes = tree_sizes(ad)
    grads = {k: v for k, v in ad.outputs.items() if k.startswith("grad.")}
    tree = sum(sizes[v.id] for v in grads.values())
    lines.append(f"  gradient as an expanded expression tree: {tree:,} nodes "
                 f"(shared graph: {len(ad.reachable(grads.values()))} nodes)")
    if final.rewrites:
        lines.append("  rewrites applied:")
        lines.extend(f"    {r}" for r in final.rewrites)
    else:
        lines.append("  rewrites applied: none")
    return "\n".join(lines)
