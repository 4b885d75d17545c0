"""Forward-mode automatic differentiation on the graph itself.

A tangent is the derivative of a value along a direction in parameter space: for the
direction v, the tangent of a value y(theta) is d/de y(theta + e v) at e = 0. Walking
the nodes in topological order, each op's `jvp` rule (in the op table) builds its
result's tangent from its inputs' tangents, as new nodes of the same graph. The
direction enters as the tangents of the parameters: for each parameter p a new
parameter `tangent.p` of p's shape (placed after the model's own in the flat parameter
vector); inputs, hyperparameters and constants have zero tangent. A zero tangent is no
node at all (None), so only what depends on a parameter gets a tangent.

The pass keeps every output and adds `tangent.<name>` for each but the declared
outputs (`out.<name>`: predictions, not part of the objective): `tangent.loss` is the
directional derivative of the loss, <grad, v>; `tangent.penalty` the penalty's, which
hoisting adds once (passes/hoist.py). Run after autodiff (forward over
reverse), the gradient outputs get tangents too: `tangent.grad.p` is the Hessian of the
objective times v, restricted to p, at the cost of a few gradients.

Several directions at once (`directions=K`): parameters `tangent<k>.p` and outputs
`tangent<k>.<name>` for k = 0..K-1, sharing the forward values (the Hessian takes
columns a block at a time this way).

`where` selects the chosen branch's tangent, so the other branch's NaN never reaches
it; elsewhere IEEE arithmetic stands, as in reverse mode.
"""
from __future__ import annotations

from lossc.ir.graph import REAL, Builder, Graph, Node, transform
from lossc.ir.ops import OPS
from lossc.ir.ops.tensors import softmax_tangent, softmax_written_out
from lossc.ir.spec import ParamSpec

TANGENT = "tangent"


def tangent_name(name: str, k: int = 0, directions: int = 1) -> str:
    """The name of `name`'s tangent along direction k: tangent.w, or tangent3.w of
    several directions (a dot: no name of the language has one)."""
    return f"{TANGENT}{k if directions > 1 else ''}.{name}"


def forward(graph: Graph, directions: int = 1) -> Graph:
    """Every output, and tangent<k>.<name> for each output and direction."""
    out = transform(graph, lambda b, n, xs: None)
    b = Builder(out, share=False)
    nodes = list(out.nodes)
    differentiated = {k: v for k, v in out.outputs.items() if not k.startswith("out.")}
    live = out.reachable(differentiated.values())
    n_params = sum(p.size for p in graph.params)
    outputs = dict(out.outputs)
    params = list(graph.params)
    for k in range(directions):
        seeds = {}
        for p in graph.params:
            spec = ParamSpec(tangent_name(p.name, k, directions), p.shape, ("const", (0.0,)),
                             n_params * (k + 1) + p.offset)
            params.append(spec)
            seeds[p.name] = spec
        tangents = tangent_nodes(b, nodes, live, seeds)
        for name, node in differentiated.items():
            b.span = node.span
            t = tangents.get(node.id)
            outputs[tangent_name(name, k, directions)] = t if t is not None else \
                b.const(0.0, node.shape)
    out.params = params
    out.outputs = outputs
    return out


def tangent_nodes(b: Builder, nodes: list, live: set, seeds: dict) -> dict[int, Node]:
    """node id -> its tangent along the direction whose parameter tangents are the
    parameters `seeds` (model parameter name -> the tangent's ParamSpec); absent where
    the tangent is zero."""
    tangents: dict[int, Node] = {}
    for node in nodes:
        if node.id not in live or node.dtype != REAL:
            continue
        b.span = node.span
        if node.op == "param":
            spec = seeds[node.attr("name")]
            tangents[node.id] = b.emit("param", (), name=spec.name, shape=spec.shape,
                                       offset=spec.offset)
            continue
        d = OPS[node.op]
        if d.jvp is None:
            continue
        ts = [tangents.get(x.id) if x.dtype == REAL else None for x in node.inputs]
        if all(t is None for t in ts):
            continue
        written_out = softmax_written_out(node)
        if written_out is not None and tangents.get(written_out[0].id) is not None:
            # exp(x - logsumexp(x)) is softmax(x): its tangent as exp's, out (t_x - t_lse),
            # subtracts t_lse from t_x where it has rounded to t_x, at the maximum
            x, axes = written_out
            tangents[node.id] = softmax_tangent(b, node, tangents[x.id], x, axes)
            continue
        t = d.jvp(b, node, ts, *node.inputs)
        if t is not None:
            assert t.shape == node.shape, (node.op, t.shape, node.shape)
            tangents[node.id] = t
    return tangents
