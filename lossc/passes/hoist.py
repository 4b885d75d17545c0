"""Hoisting: separate what depends on a sample from what does not.

The objective of a batch is (1/B) * sum_i loss(sample_i). A term of the loss (or of a
gradient) that does not depend on any input, such as `lam * sum(w ^ 2)`, is the same for
every sample: the mean leaves it unchanged and a sum multiplies it by B. So each output
is split along its additive terms into

    <out>.sample  the terms that depend on an input: computed per sample, accumulated
    <out>.once    the terms that do not: computed once per call

A penalty (LANGUAGE.md: added once, whatever the reduction) depends on no input, and
the reduction does not scale it: the penalty and its gradients become

    loss.fixed, grad.<p>.fixed    added to the objective and its gradient as they are

and so do their tangents in forward mode (tangent.loss.fixed, tangent.grad.<p>.fixed).

Code generation places every node that no input reaches in the prologue, outside the
loop over samples, and uses these split outputs for the accumulation.
"""
from __future__ import annotations

import re

from lossc.ir.graph import Builder, Graph, Node, varying


def additive_terms(node: Node, vary: set[int]) -> list[tuple[int, Node]]:
    """node as a signed sum of terms, opening `+`, `-` and negation of varying nodes,
    each node once: a sum that appears again is a term of its own there. (Opened at
    every appearance, `h = h + h` forty times over, forty lines, would give 2^40
    terms.)"""
    terms, stack, opened = [], [(1, node)], set()
    while stack:
        sign, n = stack.pop()
        if n.id in vary and n.op in ("add", "sub", "neg") and n.id not in opened:
            opened.add(n.id)
            if n.op == "neg":
                stack.append((-sign, n.inputs[0]))
            else:
                stack.append((sign if n.op == "add" else -sign, n.inputs[1]))
                stack.append((sign, n.inputs[0]))
        else:
            terms.append((sign, n))
    return terms


def _signed_sum(b: Builder, terms: list[tuple[int, Node]]) -> Node:
    total = None
    for sign, t in terms:
        if total is None:
            total = t if sign > 0 else b.neg(t)
        else:
            total = b.add(total, t) if sign > 0 else b.sub(total, t)
    return total


# a penalty output, or its tangent along a direction (passes/forward.py's names)
_PENALTY = re.compile(r"(tangent\d*\.)?(penalty|penalty_grad\.(.+))")


def fixed_name(name: str) -> str | None:
    """The hoisted name of a penalty output, None for any other: penalty -> loss.fixed,
    penalty_grad.w -> grad.w.fixed; their tangents (forward mode) likewise, so that a
    directional derivative or a Hessian-vector product holds the penalty's once:
    tangent.penalty -> tangent.loss.fixed, tangent3.penalty_grad.w ->
    tangent3.grad.w.fixed."""
    m = _PENALTY.fullmatch(name)
    if m is None:
        return None
    tangent, _, param = m.groups()
    return (tangent or "") + ("loss.fixed" if param is None else f"grad.{param}.fixed")


def hoist(graph: Graph) -> Graph:
    """out -> out.sample + out.once for every output."""
    out = Graph()
    out.copy_meta_from(graph)
    out.nodes = list(graph.nodes)
    b = Builder(out, share=False)
    vary = varying(graph)
    outputs = {}
    for name, node in graph.outputs.items():
        b.span = node.span
        if name.startswith("out."):         # predictions are per sample, not summed
            outputs[name] = node
            continue
        if fixed_name(name) is not None:
            assert node.id not in vary, name
            outputs[fixed_name(name)] = node
            continue
        terms = additive_terms(node, vary)
        sample = [t for t in terms if t[1].id in vary]
        once = [t for t in terms if t[1].id not in vary]
        if sample:
            outputs[name + ".sample"] = _signed_sum(b, sample)
        if once or not sample:
            outputs[name + ".once"] = _signed_sum(b, once) if once else b.const(0.0, node.shape)
    out.outputs = outputs
    return out
