"""The SSA graph: typed, shaped values computed by primitive ops.

A `Graph` is a list of `Node`s in topological order (every input precedes its users)
plus named outputs ("loss", "grad.w", ...). Passes never mutate a graph: they build a
new one with a `Builder`, which is also what the front end and the autodiff rules use,
so the forward and the backward computation are the same kind of IR.

The builder can hash-cons (`share=True`): asking twice for the same op on the same
inputs with the same attributes returns the first node. That is what the CSE pass is.
"""
from __future__ import annotations

from math import copysign, prod
from typing import Iterable, Optional

from lossc.ir.dtypes import BOOL, INT, REAL
from lossc.ir.ops import OPS
from lossc.source import Span

__all__ = ["BOOL", "INT", "REAL", "Builder", "Graph", "Node", "broadcast_shapes",
           "transform", "varying"]


class Node:
    """One SSA value. `attrs` is a tuple of (key, value) pairs so nodes can be hashed."""

    __slots__ = ("id", "op", "inputs", "attrs", "shape", "dtype", "span")

    def __init__(self, id: int, op: str, inputs: tuple, attrs: tuple, shape: tuple,
                 dtype: str, span: Optional[Span]):
        self.id = id
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.shape = shape
        self.dtype = dtype
        self.span = span

    def attr(self, key, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def key(self) -> tuple:
        """What makes two nodes the same computation."""
        return sharing_key(self.op, self.inputs, self.attrs)

    def __repr__(self) -> str:
        return f"%{self.id}:{self.op}{list(self.shape)}"


def sharing_key(op: str, inputs: tuple, attrs: tuple) -> tuple:
    """(op, input ids, attributes), with each float attribute's sign bit beside it:
    -0.0 == 0.0 in Python, but 1 / -0.0 is -inf."""
    return (op, tuple(i.id for i in inputs),
            tuple((k, (v, copysign(1.0, v))) if isinstance(v, float) else (k, v)
                  for k, v in attrs))


class Graph:
    """Nodes in topological order, named outputs, and the model's signature pieces."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.outputs: dict[str, Node] = {}
        # Facts the front end found, carried through every pass unchanged:
        self.params: list = []      # ParamSpec
        self.inputs: list = []      # InputSpec
        self.hypers: list = []      # HyperSpec
        self.reduce: str = "mean"
        self.dims: dict = {}
        self.rewrites: list[str] = []   # stabilizing rewrites applied, for inspection
        self.index_checks: list[dict] = []  # run-time index checks: id -> description

    def copy_meta_from(self, other: "Graph") -> None:
        self.params, self.inputs, self.hypers = other.params, other.inputs, other.hypers
        self.reduce, self.dims = other.reduce, other.dims
        self.rewrites = list(other.rewrites)
        self.index_checks = other.index_checks

    def reachable(self, roots: Iterable[Node]) -> set[int]:
        """Ids of every node the roots depend on (iteratively: graphs can be deep)."""
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            n = stack.pop()
            if n.id in seen:
                continue
            seen.add(n.id)
            stack.extend(n.inputs)
        return seen


def varying(graph: Graph) -> set[int]:
    """Ids of the nodes that depend on a per-sample input: computed for every sample,
    where the others are computed once per call (passes/hoist.py splits the outputs
    along this line; the printer marks these values, code generation gives them lanes)."""
    out: set[int] = set()
    for n in graph.nodes:
        if n.op == "input" or any(i.id in out for i in n.inputs):
            out.add(n.id)
    return out


class Builder:
    """Appends nodes to a graph, checking shapes through the op table.

    With `share=True`, identical requests return the existing node (hash-consing).
    """

    def __init__(self, graph: Graph, share: bool = True):
        self.graph = graph
        self.share = share
        self._memo: dict[tuple, Node] = {}
        self._next_id = max((n.id for n in graph.nodes), default=-1) + 1
        for n in graph.nodes:
            self._memo.setdefault(n.key(), n)
        self.span: Optional[Span] = None  # span given to new nodes when none is passed

    def emit(self, op: str, inputs: Iterable[Node] = (), span: Optional[Span] = None,
             **attrs) -> Node:
        inputs = tuple(inputs)
        attr_t = tuple(sorted(attrs.items()))
        key = sharing_key(op, inputs, attr_t)
        if self.share and key in self._memo:
            return self._memo[key]
        shape, dtype = OPS[op].infer(attrs, *inputs)
        node = Node(self._next_id, op, inputs, attr_t, tuple(shape), dtype,
                    span if span is not None else self.span)
        self._next_id += 1
        self.graph.nodes.append(node)
        if self.share:
            self._memo[key] = node
        return node

    def copy(self, node: Node, inputs: tuple) -> Node:
        """Re-emit `node` with new inputs (used by passes that rebuild a graph)."""
        return self.emit(node.op, inputs, span=node.span, **dict(node.attrs))

    # ---- conveniences the front end and the derivative rules share ----------

    def const(self, value: float, shape: tuple = ()) -> Node:
        c = self.emit("const", value=float(value))
        return self.broadcast(c, shape) if shape else c

    def zeros_like(self, x: Node) -> Node:
        return self.const(0.0, x.shape)

    def broadcast(self, x: Node, shape: tuple, dims: Optional[tuple] = None) -> Node:
        """Broadcast `x` to `shape`. `dims[i]` is the output axis of x's axis i; by
        default NumPy's rule (trailing axes line up)."""
        shape = tuple(shape)
        if x.shape == shape and dims is None:
            return x
        if dims is None:
            dims = tuple(range(len(shape) - x.rank, len(shape)))
        return self.emit("broadcast", (x,), shape=shape, dims=tuple(dims))

    def binary(self, op: str, a: Node, b: Node, span: Optional[Span] = None) -> Node:
        """An elementwise binary op with NumPy broadcasting (shapes already checked)."""
        shape = broadcast_shapes(a.shape, b.shape)
        if shape is None:
            raise ValueError(f"cannot broadcast {list(a.shape)} and {list(b.shape)}")
        return self.emit(op, (self.broadcast(a, shape), self.broadcast(b, shape)), span=span)

    def add(self, a, b): return self.binary("add", a, b)
    def sub(self, a, b): return self.binary("sub", a, b)
    def mul(self, a, b): return self.binary("mul", a, b)
    def div(self, a, b): return self.binary("div", a, b)
    def neg(self, a): return self.emit("neg", (a,))

    def where(self, c: Node, a: Node, b: Node) -> Node:
        shape = broadcast_shapes(broadcast_shapes(c.shape, a.shape) or (), b.shape)
        shape = broadcast_shapes(shape, c.shape) if shape is not None else None
        if shape is None:
            raise ValueError("cannot broadcast where() operands")
        return self.emit("where", (self.broadcast(c, shape), self.broadcast(a, shape),
                                   self.broadcast(b, shape)))

    def sum_to(self, g: Node, shape: tuple, dims: Optional[tuple] = None) -> Node:
        """The adjoint of a broadcast: sum `g` over the axes the broadcast added."""
        if g.shape == tuple(shape) and dims is None:
            return g
        if dims is None:
            dims = tuple(range(g.rank - len(shape), g.rank))
        axes = tuple(a for a in range(g.rank) if a not in dims)
        r = self.emit("sum", (g,), axes=axes) if axes else g
        return r


def broadcast_shapes(a: tuple, b: tuple) -> Optional[tuple]:
    """LANGUAGE.md's rule: equal shapes; a scalar with anything; [N] with [M, N]."""
    if a == b:
        return a
    if a == ():
        return b
    if b == ():
        return a
    if len(a) == 1 and len(b) == 2 and a[0] == b[1]:
        return b
    if len(b) == 1 and len(a) == 2 and b[0] == a[1]:
        return a
    return None


def transform(graph: Graph, rule, share: bool = False) -> Graph:
    """Rebuild `graph` node by node: `rule(b, node, inputs)` returns the new node for
    `node` given its already-rebuilt `inputs` (or None to copy it unchanged).

    Passes are written as such rules; outputs follow their nodes."""
    out = Graph()
    out.copy_meta_from(graph)
    b = Builder(out, share=share)
    new: dict[int, Node] = {}
    for n in graph.nodes:
        inputs = tuple(new[i.id] for i in n.inputs)
        b.span = n.span
        r = rule(b, n, inputs)
        new[n.id] = r if r is not None else b.copy(n, inputs)
    out.outputs = {k: new[v.id] for k, v in graph.outputs.items()}
    return out
