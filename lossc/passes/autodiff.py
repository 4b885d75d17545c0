"""Reverse-mode automatic differentiation on the graph itself.

Walks the nodes that the loss depends on in reverse topological order, asking each
op's `vjp` rule (in the op table) to build the adjoints of its inputs as new nodes of
the same graph. Adjoints reaching a node from several users are summed. Because every
forward value is computed once and used by reference, the backward graph grows by a
constant number of nodes per forward node: no expression swell, however deep the reuse.

Adds one output per parameter, "grad.<name>", of the parameter's shape (zeros for a
parameter the loss does not use).

Masked adjoints. The branch a `where` does not choose contributes nothing to the
gradient, whatever its own derivative: `where(p > 0, sqrt(p), 0)` at p = -1 has
gradient 0, not 0 * (0.5 / sqrt(-1)) = NaN. So an adjoint may carry a mask, a bool
value of its shape outside which it is exactly 0 and nothing computed from it may be
observed:
  - a `where`'s adjoint into a branch is masked by the condition (its negation for the
    other branch), and'ed with the where's own mask;
  - through an elementwise op the mask stays, and every adjoint computed from a masked
    one is selected by it, `where(m, contribution, 0)` (a select, not a product: the
    untaken branch's NaN or infinity never reaches a result); an adjoint that is the
    masked one itself, its negation or a multiple by a finite constant needs no
    select (ir/ops/base.py `selected`);
  - where shapes change, the op's own `mask` rule (ir/ops) decides: views and sums move
    or add up the 0/1 indicator of the mask as they do the adjoint, so an element's
    mask says whether any chosen element reaches it (a parameter broadcast over a
    vector is masked by "any element chosen"); reductions spread their group's mask
    over the group; softmax, log_softmax and matrix products, whose elements each
    depend on many, keep an element where any chosen element depends on it, and take
    only chosen elements (or the operand rows and columns they use) into their sums;
  - adjoints reaching a node along several paths add up, and so do their masks (or);
    an unmasked one makes the sum unmasked, and so do a where's two branches meeting
    again (`c or not c`).
Elsewhere IEEE arithmetic stands: `sqrt(p)` at 0 still has gradient inf, and `0 *
sqrt(p)` at p = -1 is NaN, as the formula says.
"""
from __future__ import annotations

from typing import Optional

from lossc.ir.graph import REAL, Builder, Graph, Node, transform
from lossc.ir.ops import OPS, OpDef


def autodiff(graph: Graph) -> Graph:
    """loss -> loss, grad.<p> for every parameter p; and a penalty (LANGUAGE.md: added
    once to the objective) -> penalty, penalty_grad.<p>, kept apart because the
    reduction scales the loss's once-per-call terms and not the penalty's
    (passes/hoist.py)."""
    out = transform(graph, lambda b, n, xs: None)
    b = Builder(out, share=False)
    for root, prefix in (("loss", "grad."), ("penalty", "penalty_grad.")):
        if root in out.outputs:
            out.outputs.update(gradients(out, b, out.outputs[root], prefix))
    return out


def gradients(out: Graph, b: Builder, root: Node, prefix: str) -> dict:
    """{prefix + p: d root / d p} for every parameter p (zeros where root does not
    depend on p), built into `out`."""
    live = out.reachable([root])
    adjoint: dict[int, Node] = {root.id: b.const(1.0)}
    mask: dict[int, Optional[Node]] = {root.id: None}   # None: no mask
    for node in reversed(list(out.nodes)):
        if node.id not in live or node.id not in adjoint:
            continue
        d = OPS[node.op]
        if d.vjp is None:
            continue
        b.span = node.span
        pairs = contributions(b, d, adjoint[node.id], mask[node.id], node)
        for x, (g, m) in zip(node.inputs, pairs):
            if g is None or x.dtype != REAL:
                continue
            assert g.shape == x.shape, (node.op, g.shape, x.shape)
            assert m is None or m.shape == x.shape, (node.op, m.shape, x.shape)
            if x.id in adjoint:
                adjoint[x.id] = b.add(adjoint[x.id], g)
                mask[x.id] = _either(b, mask[x.id], m)
            else:
                adjoint[x.id], mask[x.id] = g, m
    params = {n.attr("name"): n for n in out.nodes if n.op == "param"}
    grads = {}
    for spec in out.params:
        p = params.get(spec.name)
        g = adjoint.get(p.id) if p is not None else None
        b.span = p.span if p is not None else None
        grads[prefix + spec.name] = g if g is not None else b.const(0.0, spec.shape)
    return grads


def contributions(b: Builder, d: OpDef, g: Node, m: Optional[Node], node: Node) -> list:
    """(adjoint, mask) for each input of `node`, from its adjoint g and g's mask m: the
    op's mask rule (ir/ops: `selected` for an elementwise op)."""
    return d.mask(b, g, m, node, *node.inputs)


def _either(b: Builder, m1: Optional[Node], m2: Optional[Node]) -> Optional[Node]:
    """The mask of a sum of two masked adjoints. A where's two branches meeting again
    (c and not c; m and c with m and not c) give back the mask before the where."""
    if m1 is None or m2 is None or _negation(m1, m2):
        return None
    if m1 is m2:
        return m1
    if (m1.op == m2.op == "and" and m1.inputs[0] is m2.inputs[0]
            and _negation(m1.inputs[1], m2.inputs[1])):
        return m1.inputs[0]
    return b.emit("or", (m1, m2))


def _negation(p: Node, q: Node) -> bool:
    return (p.op == "not" and p.inputs[0] is q) or (q.op == "not" and q.inputs[0] is p)
