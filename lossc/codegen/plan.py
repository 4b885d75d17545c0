"""Planning a model function: which nodes it computes, which of them are stored in
buffers and which are computed where they are read, and the fusions code generation
takes (row contractions, outer-product gradients, logsumexp with its softmax).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lossc.ir.graph import INT, REAL, Graph, Node, varying
from lossc.ir.ops import OPS

# fused values and views one element read may pass through (see bound_fusion)
MAX_FUSED_DEPTH = 32
ROW_MATVEC_CHUNKS = 4   # W @ x along x's rows from this many vectors per row
OUTER_MIN_SIZE = 64  # outer products smaller than this are accumulated directly
ROW_VECTOR_GRADIENTS = True   # s * x gradients through the row kernel (outer_gradient)


@dataclass
class Plan:
    W: int
    want_grad: bool
    live: list = field(default_factory=list)       # the nodes the outputs need, in order
    vary: set = field(default_factory=set)         # ids of the per-sample ones
    materialize: set = field(default_factory=set)  # ids of the nodes kept in buffers
    softmax_of: dict = field(default_factory=dict)  # logsumexp id -> exp node
    row_dots: dict = field(default_factory=dict)     # sum id -> (w, x)
    row_matvecs: dict = field(default_factory=dict)  # matmul id -> (W, x)
    row_grads: dict = field(default_factory=dict)    # output key -> (s, x)
    untransposed: set = field(default_factory=set)   # inputs read only along rows

    def row_input(self, x: Node) -> bool:
        return x.op == "input" and x.rank == 1 and x.dtype == REAL and x.size >= self.W

    def row_dot_operands(self, n: Node):
        """(w, x) if n is sum(w * x) of a real input row x and a w computed once per
        call, with the product used nowhere else (so it is never materialized)."""
        if n.op != "sum" or n.rank != 0 or n.id not in self.vary:
            return None
        m = n.inputs[0]
        if m.op != "mul" or m.rank != 1 or m.id in self.materialize:
            return None
        for w, x in (m.inputs, m.inputs[::-1]):
            if (self.row_input(x) and w.id not in self.vary and w.shape == x.shape
                    and w.dtype == REAL):
                return w, x
        return None

    def row_matvec_operands(self, n: Node):
        """(W, x) if n is W @ x of a real input row x (D elements) and a once-per-call
        matrix W, with x at least ROW_MATVEC_CHUNKS vectors long. Shorter rows are
        cheaper transposed: each output then costs a transpose-and-add network, which
        only pays back over enough FMAs."""
        if n.op != "matmul" or n.rank != 1 or n.id not in self.vary:
            return None
        w, x = n.inputs
        if (w.rank == 2 and w.id not in self.vary and w.dtype == REAL
                and (w.op == "param" or w.id in self.materialize) and self.row_input(x)
                and x.size // self.W >= ROW_MATVEC_CHUNKS):
            return w, x
        return None

    def row_grad_operands(self, n: Node):
        """(s, x) if n is s * x of a per-sample scalar s (broadcast) and a real input
        row x."""
        if n.op != "mul" or n.rank != 1:
            return None
        for bc, x in (n.inputs, n.inputs[::-1]):
            if (self.row_input(x) and bc.op == "broadcast" and bc.attr("dims") == ()
                    and bc.inputs[0].rank == 0 and bc.inputs[0].id in self.vary
                    and bc.inputs[0].dtype == REAL):
                return bc.inputs[0], x
        return None

    def outer_gradient(self, key: str, node: Node):
        """(u, v) if the output `key` is a per-sample gradient outer(u, v) large enough
        for the block kernels, else None. A vector gradient s * x (s a per-sample
        scalar, x an input row: dot(w, x)'s) is the one-row case, u = s: staged and
        added by the row kernel too, it leaves the vector loop's iterations free of the
        chain of FMAs into the gradient, which an iteration would otherwise end on."""
        if not (key.startswith("grad.") and key.endswith(".sample")):
            return None
        if node.rank == 1:
            return self.row_grad_operands(node) if ROW_VECTOR_GRADIENTS else None
        if node.size >= OUTER_MIN_SIZE:
            return self.outer_factors(node)
        return None

    def outer_factors(self, node: Node):
        """(u, v) if node is outer(u, v) of two per-sample vectors, else None."""
        if node.op != "mul" or node.rank != 2:
            return None
        a, c = node.inputs
        for x, y in ((a, c), (c, a)):
            if (x.op == y.op == "broadcast" and x.attr("dims") == (0,)
                    and y.attr("dims") == (1,) and x.inputs[0].id in self.vary
                    and y.inputs[0].id in self.vary):
                return x.inputs[0], y.inputs[0]
        return None


def plan(graph: Graph, outs: dict, W: int, want_grad: bool) -> Plan:
    p = Plan(W, want_grad)
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
                # only an output: the accumulation computes it element by element
                fused_ok = n.id in out_ids
            else:
                fused_ok = (len(us) == 1 and n.id not in out_ids
                            and OPS[us[0].op].single_pass
                            and not (n.id not in p.vary and us[0].id in p.vary))
            if not fused_ok:
                p.materialize.add(n.id)
    bound_fusion(p)
    plan_softmax(p)
    plan_rows(p, uses, outs)
    return p


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


def plan_softmax(p: Plan) -> None:
    """Pair each logsumexp(z) of a vector with the softmax autodiff makes of it,
    exp(z - logsumexp(z)): lowering the logsumexp then fills the softmax's buffer
    from the exponentials it computes anyway (reduce.py logsumexp_and_softmax), where
    the softmax would compute them all again."""
    for n in p.live:
        if n.op != "exp" or n.rank != 1:
            continue
        d = n.inputs[0]
        if d.op != "sub" or d.inputs[1].op != "broadcast" or d.inputs[1].attr("dims"):
            continue
        z, lse = d.inputs[0], d.inputs[1].inputs[0]
        if (lse.op == "logsumexp" and lse.inputs[0] is z and lse.rank == 0
                and z.shape == n.shape and (lse.id in p.vary) == (n.id in p.vary)):
            p.softmax_of[lse.id] = n
            p.materialize.add(n.id)


def plan_rows(p: Plan, uses: dict, outs: dict) -> None:
    """Find the row dots (sum nodes), row matrix-vector products (matmul nodes) and
    row gradients (output keys), and the inputs that then need no transpose."""
    if p.W < 2:
        return
    row_users: dict[int, set[int]] = {}
    for n in p.live:
        wx = p.row_dot_operands(n)
        if wx is not None:
            p.row_dots[n.id] = wx
            row_users.setdefault(wx[1].id, set()).add(n.inputs[0].id)
        wx = p.row_matvec_operands(n)
        if wx is not None:
            p.row_matvecs[n.id] = wx
            row_users.setdefault(wx[1].id, set()).add(n.id)
    if p.want_grad:
        # outer(u, x) gradients of an input row x take the row kernel (row_outer.py)
        for key, n in outs.items():
            ux = p.outer_gradient(key, n)
            if ux and p.row_input(ux[1]):
                row_users.setdefault(ux[1].id, set()).update(
                    i.id for i in n.inputs if i.op == "broadcast" and i.inputs[0] is ux[1])
    if p.want_grad:
        for key, n in outs.items():
            if key.startswith("grad.") and key.endswith(".sample"):
                sx = p.row_grad_operands(n)
                if sx is not None and not uses[n.id]:
                    p.row_grads[key] = sx
                    row_users.setdefault(sx[1].id, set()).add(n.id)
    out_ids = {n.id for n in outs.values()}
    for x_id, users in row_users.items():
        if {u.id for u in uses[x_id]} <= users and x_id not in out_ids:
            p.untransposed.add(x_id)
