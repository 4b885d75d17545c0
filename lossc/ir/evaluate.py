"""A reference interpreter: the graph evaluated with each op's NumPy semantics.

Slow (one sample at a time, op by op) and independent of code generation, so tests can
compare compiled results against it on any model, and tools can evaluate a graph
without compiling it.
"""
from __future__ import annotations

import numpy as np

from lossc.ir.graph import Graph
from lossc.ir.ops import OPS


def evaluate(graph: Graph, params: dict, sample: dict, hypers: dict, output: str = "loss"):
    """The value of `output` for one sample (inputs without the batch axis)."""
    vals: dict[int, object] = {}
    target = graph.outputs[output]
    live = graph.reachable([target])
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            if n.id not in live:
                continue
            a = dict(n.attrs)
            if n.op == "param":
                vals[n.id] = np.asarray(params[a["name"]], dtype=np.float64)
            elif n.op == "input":
                v = np.asarray(sample[a["name"]])
                vals[n.id] = v.astype(np.int64) if a["is_int"] else v.astype(np.float64)
            elif n.op == "hyper":
                vals[n.id] = np.asarray(hypers[a["name"]], dtype=np.float64).reshape(n.shape)
            else:
                vals[n.id] = OPS[n.op].eval(a, *[vals[i.id] for i in n.inputs])
    return vals[target.id]


def objective(graph: Graph, params: dict, data: dict, hypers: dict | None = None) -> float:
    """The batch objective as LANGUAGE.md defines it: the mean (or with `reduce sum`
    the sum) of the per-sample loss, plus the penalty once; one sample when the model
    has no inputs."""
    hypers = {**{h.name: h.default_array() for h in graph.hypers}, **(hypers or {})}
    names = [i.name for i in graph.inputs]
    B = len(data[names[0]]) if names else 1
    losses = [float(evaluate(graph, params, {k: data[k][i] for k in names}, hypers))
              for i in range(B)]
    total = float(np.sum(losses))
    total = total if graph.reduce == "sum" else total / B
    if "penalty" in graph.outputs:          # once, whatever the reduction
        total += float(evaluate(graph, params, {}, hypers, "penalty"))
    return total


def evaluate_batch(graph: Graph, params: dict, data: dict, hypers: dict | None = None,
                   outputs=None) -> dict:
    """Every output in `outputs` (default: all) for each sample of a batch, as arrays
    with the batch axis first (B, *shape); B = 1 for a model with no inputs.

    The same semantics as `evaluate`, sample by sample, computed faster: a value no
    input reaches is computed once, elementwise ops take whole batches at once (their
    NumPy functions broadcast over the leading axis, a per-sample operand having the
    same trailing shape as a once-per-call one), and every other op runs its `eval`
    one sample at a time."""
    hypers = {**{h.name: h.default_array() for h in graph.hypers}, **(hypers or {})}
    names = [i.name for i in graph.inputs]
    B = len(data[names[0]]) if names else 1
    targets = list(graph.outputs) if outputs is None else list(outputs)
    live = graph.reachable([graph.outputs[k] for k in targets])
    vals: dict[int, object] = {}
    batched: set[int] = set()     # ids of the values that carry the batch axis
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            if n.id not in live:
                continue
            a = dict(n.attrs)
            if n.op == "param":
                vals[n.id] = np.asarray(params[a["name"]], dtype=np.float64)
            elif n.op == "input":
                v = np.asarray(data[a["name"]])
                vals[n.id] = v.astype(np.int64) if a["is_int"] else v.astype(np.float64)
                batched.add(n.id)
            elif n.op == "hyper":
                vals[n.id] = np.asarray(hypers[a["name"]], dtype=np.float64).reshape(n.shape)
            elif not any(i.id in batched for i in n.inputs):
                vals[n.id] = OPS[n.op].eval(a, *[vals[i.id] for i in n.inputs])
            elif OPS[n.op].kind == "elem":
                vals[n.id] = np.asarray(OPS[n.op].eval(a, *[vals[i.id] for i in n.inputs]))
                batched.add(n.id)
            else:
                args = [vals[i.id] for i in n.inputs]
                sample = [i.id in batched for i in n.inputs]
                vals[n.id] = np.stack([
                    np.asarray(OPS[n.op].eval(a, *[x[s] if per else x
                                                   for x, per in zip(args, sample)]))
                    for s in range(B)])
                batched.add(n.id)
    out = {}
    for k in targets:
        node = graph.outputs[k]
        v = np.asarray(vals[node.id])
        out[k] = v if node.id in batched else np.broadcast_to(v, (B,) + v.shape)
    return out
