"""Reverse-mode automatic differentiation on the graph itself.

Walks the nodes that the loss depends on in reverse topological order, asking each
op's `vjp` rule (in the op table) to build the adjoints of its inputs as new nodes of
the same graph. Adjoints reaching a node from several users are summed. Because every
forward value is computed once and used by reference, the backward graph grows by a
constant number of nodes per forward node: no expression swell, however deep the reuse.

Adds one output per parameter, "grad.<name>", of the parameter's shape (zeros for a
parameter the loss does not use).
"""
from __future__ import annotations

from lossc.ir.graph import REAL, Builder, Graph, Node, transform
from lossc.ir.ops import OPS


def autodiff(graph: Graph) -> Graph:
    """loss -> loss, grad.<p> for every parameter p."""
    out = transform(graph, lambda b, n, xs: None)
    b = Builder(out, share=False)
    loss = out.outputs["loss"]
    live = out.reachable([loss])
    adjoint: dict[int, Node] = {loss.id: b.const(1.0)}
    for node in reversed(list(out.nodes)):
        if node.id not in live or node.id not in adjoint:
            continue
        rule = OPS[node.op].vjp
        if rule is None:
            continue
        b.span = node.span
        contributions = rule(b, adjoint[node.id], node, *node.inputs)
        for x, g in zip(node.inputs, contributions):
            if g is None or x.dtype != REAL:
                continue
            assert g.shape == x.shape, (node.op, g.shape, x.shape)
            prev = adjoint.get(x.id)
            adjoint[x.id] = g if prev is None else b.add(prev, g)
    params = {n.attr("name"): n for n in out.nodes if n.op == "param"}
    for spec in out.params:
        p = params.get(spec.name)
        g = adjoint.get(p.id) if p is not None else None
        b.span = p.span if p is not None else None
        out.outputs["grad." + spec.name] = g if g is not None else b.const(0.0, spec.shape)
    return out
