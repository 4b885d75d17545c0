"""Planning a model function: which nodes it computes, and which of them are stored in
buffers and which are computed where they are read. (The fusions into kernels are the
lower pass's, passes/lower.py: explicit ops by now.)"""
from __future__ import annotations

from dataclasses import dataclass, field

from lossc.ir.graph import INT, Graph, Node, varying
from lossc.ir.ops import OPS

# fused values and views one element read may pass through (see bound_fusion)
MAX_FUSED_DEPTH = 32


@dataclass
class Plan:
    live: list = field(default_factory=list)       # the nodes the outputs need, in order
    vary: set = field(default_factory=set)         # ids of the per-sample ones
    materialize: set = field(default_factory=set)  # ids of the nodes kept in buffers
    untransposed: set = field(default_factory=set)  # inputs read only along their rows
    row_gathers: set = field(default_factory=set)  # per-sample rows of a parameter, P[u]


def plan(graph: Graph, outs: dict) -> Plan:
    """The plan of the function computing the outputs `outs` of the graph.

    Tensor ops fill buffers. An elementwise tensor is computed where it is read
    (fused) when its one use is an op that reads each element once (the op table's
    single_pass), and it is not an output that is also used, nor a once-per-call value
    read by a per-sample one (that would compute it again for every sample); else it
    is stored. An elementwise tensor that is only an output is computed element by
    element as it is accumulated."""
    p = Plan()
    live = graph.reachable(outs.values())
    p.live = [n for n in graph.nodes if n.id in live]
    p.vary = varying(graph)
    uses: dict[int, list[Node]] = {n.id: [] for n in p.live}
    for n in p.live:
        for i in n.inputs:
            uses[i.id].append(n)
    out_ids = {v.id for v in outs.values()}
    for n in p.live:
        kind = OPS[n.op].kind
        if kind == "tensor":
            p.materialize.add(n.id)
        elif kind == "elem" and n.rank > 0 and n.dtype != INT:
            # (an int vector, the checked indices of a gather, is read where it is
            # used: buffers hold reals)
            us = uses[n.id]
            if not us:
                fused_ok = n.id in out_ids
            else:
                fused_ok = (len(us) == 1 and n.id not in out_ids
                            and OPS[us[0].op].single_pass
                            and not (n.id not in p.vary and us[0].id in p.vary))
            if not fused_ok:
                p.materialize.add(n.id)
    bound_fusion(p)
    p.row_gathers = {n.id for n in p.live if is_row_gather(n, p.vary)}
    for n in p.live:
        if n.op == "input" and n.id not in out_ids and uses[n.id] and all(
                reads_rows(u, n) for u in uses[n.id]):
            p.untransposed.add(n.id)
    return p


def is_row_gather(n: Node, vary: set) -> bool:
    """Whether n is a row of a parameter at a per-sample index (`P[u]`, a take along
    the first axis): its lanes' rows lie whole in the parameters, so a lane group
    loads them as vectors and transposes them (codegen/transpose.py gather_rows)
    rather than reading element by element, lane by lane, wherever it is used."""
    return (n.op == "take" and n.attr("axis") == 0 and n.inputs[0].op == "param"
            and n.rank >= 1 and n.id in vary)


def reads_rows(user: Node, x: Node) -> bool:
    """Whether `user` reads input x only along its rows, where they lie (the row
    kernels: codegen/rows.py, codegen/row_outer.py; the block product,
    codegen/gemm.py, transposes a block of rows itself), so x needs no transpose."""
    if user.op == "block_matmul":
        return True         # (x is its one vector operand)
    if user.op in ("row_dot", "row_matvec") or (user.op == "outer_grad"
                                                and user.attr("kind") == "rows"):
        return user.inputs[1] is x and user.inputs[0] is not x
    return False


def bound_fusion(p: Plan) -> None:
    """Reading an element of a fused value or a view computes it from its inputs'
    elements, and those from theirs (`elem` -> `compute` -> `elem` ...), down to
    values that are stored: a chain of fused nodes nests as deeply in Python calls.
    A sum of a thousand vectors is such a chain; here every node at which a chain
    would pass MAX_FUSED_DEPTH is stored in a buffer instead, so no read nests
    deeper, whatever the program. The stored node is computed by the same
    operations, so results do not change."""
    depth: dict[int, int] = {}     # fused nodes a read of the node passes through
    for n in p.live:
        kind = OPS[n.op].kind
        fused = (kind == "view" or (kind == "elem" and n.rank > 0)) \
            and n.id not in p.materialize
        below = max((depth[i.id] for i in n.inputs), default=0)
        if fused and below >= MAX_FUSED_DEPTH:
            p.materialize.add(n.id)
            fused = False
        depth[n.id] = below + 1 if fused else 0
