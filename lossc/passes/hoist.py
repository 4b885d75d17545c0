"""Hoisting: separate what depends on a sample from what does not.

The objective of a batch is (1/B) * sum_i loss(sample_i). A term of the loss (or of a
gradient) that does not depend on any input, such as `lam * sum(w ^ 2)`, is the same for
every sample: the mean leaves it unchanged and a sum multiplies it by B. So each output
is split along its additive terms into

    <out>.sample  the terms that depend on an input: computed per sample, accumulated
    <out>.once    the terms that do not: computed once per call

Code generation places every node that no input reaches in the prologue, outside the
loop over samples, and uses these split outputs for the accumulation.
"""
from __future__ import annotations

from lossc.ir.graph import Builder, Graph, Node, varying


def additive_terms(node: Node, vary: set[int]) -> list[tuple[int, Node]]:
    """node as a signed sum of terms, opening `+`, `-` and negation of varying nodes."""
    terms, stack = [], [(1, node)]
    while stack:
        sign, n = stack.pop()
        if n.id in vary and n.op in ("add", "sub", "neg"):
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
        terms = additive_terms(node, vary)
        sample = [t for t in terms if t[1].id in vary]
        once = [t for t in terms if t[1].id not in vary]
        if sample:
            outputs[name + ".sample"] = _signed_sum(b, sample)
        if once or not sample:
            outputs[name + ".once"] = _signed_sum(b, once) if once else b.const(0.0, node.shape)
    out.outputs = outputs
    return out
