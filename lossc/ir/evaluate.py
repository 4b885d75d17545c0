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
                vals[n.id] = np.float64(hypers[a["name"]])
            else:
                vals[n.id] = OPS[n.op].eval(a, *[vals[i.id] for i in n.inputs])
    return vals[target.id]


def objective(graph: Graph, params: dict, data: dict, hypers: dict | None = None) -> float:
    """The batch objective as LANGUAGE.md defines it: the mean (or with `reduce sum`
    the sum) of the per-sample loss; one sample when the model has no inputs."""
    hypers = {**{h.name: h.default for h in graph.hypers}, **(hypers or {})}
    names = [i.name for i in graph.inputs]
    B = len(data[names[0]]) if names else 1
    losses = [float(evaluate(graph, params, {k: data[k][i] for k in names}, hypers))
              for i in range(B)]
    total = float(np.sum(losses))
    return total if graph.reduce == "sum" else total / B
