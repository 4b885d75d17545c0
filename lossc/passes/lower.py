"""Lowering: the fusions code generation takes, rewritten into explicit ops.

Code generation has kernels for a few patterns that matter: contractions along an
input's rows, per-sample outer-product gradients accumulated over the batch in blocks,
logsumexp with the softmax of its gradient, one exponential for several of sigmoid,
softplus and log_sigmoid. This pass rewrites each into an op of its own (the op
table's lowered ops, lossc/ir/ops/lowered.py), so `lossc graph --after lower` shows
every fusion, the verifier checks its operands, and the reference interpreter
evaluates the lowered graph; code generation then has nothing to pattern-match.

Which patterns pay depends on the target: the lanes W of a vector (the vector width
over the dtype's size), given as a `Target`. With W = 1 there is no vector loop, so
neither the row kernels, the block product nor the outer-product ones: only the last two
rules apply. The rules ("an input row": a
real input vector of at least W elements, read one sample a row, W > 1; "once": a
value no input reaches, computed once per call; "per-sample": one that depends on an
input):

    sum(w * x)                      -> row_dot(w, x)
        x an input row, w once, the product used by nothing else
    W @ x                           -> block_matmul(W, x)
        x an input row, W a once matrix stored in memory of H >= BLOCK_MIN_OUTPUTS
        rows, or of BLOCK_MIN_ELEMENTS elements or more and H >= BLOCK_MIN_ROWS: a
        block of samples as one matrix product (codegen/gemm.py). It packs each
        block's rows of x into lane vectors (a cost per element of x) and then
        reuses each loaded element of W for the block's samples: it pays over
        enough rows, and wherever W is too large for the caches that the row
        kernel's one pass over W per lane group would reread it from memory
    x @ A                           -> block_matmul(x, A)
        x an input row, A a once matrix stored in memory, any size: the product
        otherwise transposes x and sums each output's D terms a lane group at a time
    W @ x                           -> row_matvec(W, x)
        x an input row of at least ROW_MATVEC_CHUNKS vectors (a transpose-and-add
        network per output pays back over that many FMAs), W a once matrix stored in
        memory (a parameter or a computed value, not a view), too small for
        block_matmul
    grad.p.sample = s * x           -> grad.p.sample = outer_grad(s, x)  kind=rows
        s a per-sample scalar, x an input row
    grad.p.sample = outer(u, v)     -> grad.p.sample = outer_grad(u, v)  kind=rows if
                                       v is an input row, else kind=block
        u, v per-sample vectors, at least OUTER_MIN_SIZE elements in all
    logsumexp(z), exp(z - logsumexp(z))
                                    -> take(t, K), slice(t, 0, K)
                                       with t = logsumexp_softmax(z)
        z a vector of K <= PAIR_MAX elements (the kernel unrolls them), both computed
        alike (once or per sample)
    f(z), h(-z), ... (f, h among sigmoid, softplus, log_sigmoid, dsigmoid)
                                    -> f_e(z, e), h_e(-z, e)  with e = exp_neg_abs(z)
        z a scalar, and at least two such uses of it to share the exponential
    tanh(z), sech2(z)               -> tanh_e(z, e), sech2_e(z, e)  with e = expm1_2abs(z)
        z per sample, of any shape (a layer and its gradient; e is then stored)
    grad.p.sample = put(g, i) + scatter(h, j) + ...   (along p's rows)
                                    -> grad.p.sample = row_scatter(g, i, h, j, ...)
        p row-sparse: used only through gathers (E[u], E[tok]), so its gradient is
        nothing but the rows they touched, and it has no once-per-call or penalty term;
        only for the gradient's function (Target.row_sparse), at any width

(`outer(u, v)` is how build.py and autodiff write an outer product: the product of
broadcast(u) along rows and broadcast(v) along columns.) The values are those of the
graph before: row_dot and the kernels sum in other orders, within rounding. What no
longer has a use (the products, broadcasts, the softmax's exp) is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from lossc.ir.graph import REAL, Builder, Graph, Node, varying
from lossc.ir.ops import OPS
from lossc.passes.dce import dce

ROW_MATVEC_CHUNKS = 4   # W @ x along x's rows from this many vectors per row
BLOCK_MIN_OUTPUTS = 64  # W @ x as a block product from this many rows of W ...
BLOCK_MIN_ELEMENTS = 16384   # ... or from this many elements of W
BLOCK_MIN_ROWS = 16     # ... with at least this many rows
OUTER_MIN_SIZE = 64     # outer-product gradients smaller than this: per-lane sums
PAIR_MAX = 256          # logsumexp_softmax's kernel unrolls its vector: a bound on code size
# functions of z computed from one exponential of |z| they share: {op: (the shared
# exponential's op, the op computing the function from it)}
SHARED_EXP = {"sigmoid": ("exp_neg_abs", "sigmoid_e"),
              "softplus": ("exp_neg_abs", "softplus_e"),
              "log_sigmoid": ("exp_neg_abs", "log_sigmoid_e"),
              "dsigmoid": ("exp_neg_abs", "dsigmoid_e"),
              "tanh": ("expm1_2abs", "tanh_e"),
              "sech2": ("expm1_2abs", "sech2_e")}


@dataclass(frozen=True)
class Target:
    """What lowering needs to know of the machine code it prepares the graph for."""

    lanes: int      # samples per vector: vector width / element size
    dtype: str
    # the gradients of row-sparse parameters as row_scatter (the gradient's function,
    # whose callers take its touched rows: not the derived units' functions)
    row_sparse: bool = True

    @staticmethod
    def of(dtype: str, vector_bits: int, row_sparse: bool = True) -> "Target":
        return Target(max(1, vector_bits // (64 if dtype == "float64" else 32)), dtype,
                      row_sparse)


def row_terms(node: Node) -> list:
    """The (g, i) pairs of a sum of gathers' gradients along axis 0, put(g, i) or
    scatter(g, i), or [] when the node is anything else."""
    terms, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.op == "add":
            stack.extend(reversed(n.inputs))
        elif n.op in ("put", "scatter") and n.attr("axis") == 0:
            terms.append(tuple(n.inputs))
        else:
            return []
    return terms


def _zero(n: Node) -> bool:
    while n.op == "broadcast":
        n = n.inputs[0]
    return n.op == "const" and n.attr("value") == 0.0


def row_sparse_params(graph: Graph) -> dict:
    """{parameter name: rows its gradient touches per sample} for the row-sparse
    parameters of a plain graph: those whose per-sample gradient is a sum of gathers'
    gradients along their rows and whose gradient has no other term (once per call or a
    penalty's)."""
    out = {}
    for p in graph.params:
        sample = graph.outputs.get(f"grad.{p.name}.sample")
        others = [graph.outputs.get(f"grad.{p.name}.{part}") for part in ("once", "fixed")]
        if sample is None or not p.shape or any(o is not None and not _zero(o)
                                                for o in others):
            continue
        terms = row_terms(sample)
        if terms:
            out[p.name] = sum(1 if i.rank == 0 else i.shape[0] for _, i in terms)
    return out


def lower(graph: Graph, target: Target) -> Graph:
    """The graph with the fusions that pay for `target` as explicit ops (see above)."""
    return _Lowering(graph, target.lanes, target.row_sparse).run()


class _Lowering:
    def __init__(self, graph: Graph, W: int, row_sparse: bool = True):
        self.graph, self.W = graph, W
        self.sparse = row_sparse_params(graph) if row_sparse else {}
        self.vary = varying(graph)
        self.uses: dict[int, int] = {n.id: 0 for n in graph.nodes}
        for n in graph.nodes:
            for i in n.inputs:
                self.uses[i.id] += 1
        self.outputs = {v.id for v in graph.outputs.values()}
        self.pairs = self.softmax_pairs()        # logsumexp id -> its softmax's exp
        self.paired = {e.id: lse for lse, e in self.pairs.items()}
        self.shared = self.shared_exponentials()  # ids of the uses of exp(-|z|) to share
        self.new: dict[int, Node] = {}            # old node id -> its node in the result
        self.both: dict[int, Node] = {}           # logsumexp id -> its logsumexp_softmax
        self.exps: dict[tuple, Node] = {}         # (op, z's id) -> z's shared exponential

    def run(self) -> Graph:
        out = Graph()
        out.copy_meta_from(self.graph)
        b = Builder(out, share=False)
        for n in self.graph.nodes:
            b.span = n.span
            xs = tuple(self.new[i.id] for i in n.inputs)
            self.new[n.id] = self.rewrite(b, n, xs) or b.copy(n, xs)
        out.outputs = {}
        for key, n in self.graph.outputs.items():
            b.span = n.span
            out.outputs[key] = (self.row_scatter(b, key, n) or self.outer_gradient(b, key, n)
                                or self.new[n.id])
        return dce(out)

    # ------------------------------------------------------------ the rules

    def rewrite(self, b: Builder, n: Node, xs: tuple):
        """The node that replaces n, or None to copy it."""
        if n.id in self.pairs:
            t = self.both[n.id] = b.emit("logsumexp_softmax", xs)
            return b.emit("take", (t, b.emit("iconst", value=n.inputs[0].size)), axis=0)
        if n.id in self.paired:
            return b.emit("slice", (self.both[self.paired[n.id]],), axis=0, start=0,
                          stop=n.size)
        if n.id in self.shared:
            shared, op = SHARED_EXP[n.op]
            key = (shared, self.root(n.inputs[0]).id)
            if key not in self.exps:
                self.exps[key] = b.emit(shared, (self.new[key[1]],))
            return b.emit(op, (xs[0], self.exps[key]))
        wx = self.row_dot(n) if n.op == "sum" else None
        if wx is not None:
            return b.emit("row_dot", tuple(self.new[i.id] for i in wx))
        if n.op == "matmul" and self.block_matmul(n):
            return b.emit("block_matmul", xs)
        if n.op == "matmul" and self.row_matvec(n):
            return b.emit("row_matvec", xs)
        return None

    def row_input(self, x: Node) -> bool:
        """(never with one lane: the row kernels are the vector loop's)"""
        return (self.W > 1 and x.op == "input" and x.rank == 1 and x.dtype == REAL
                and x.size >= self.W)

    def once(self, n: Node) -> bool:
        return n.id not in self.vary

    def row_dot(self, n: Node):
        """(w, x) of sum(w * x) as the row_dot rule takes it, else None."""
        m = n.inputs[0]
        if (n.rank != 0 or self.once(n) or m.op != "mul" or m.rank != 1
                or self.uses[m.id] != 1 or m.id in self.outputs):
            return None
        for w, x in (m.inputs, m.inputs[::-1]):
            if self.row_input(x) and self.once(w) and w.shape == x.shape and w.dtype == REAL:
                return w, x
        return None

    def stored_matrix(self, w: Node) -> bool:
        """A once-per-call real matrix with memory of its own (a parameter or a
        computed value, not a view): the kernels read it where it lies."""
        stored = w.op == "param" or OPS[w.op].kind in ("elem", "tensor")
        return w.rank == 2 and self.once(w) and w.dtype == REAL and stored

    def row_matvec(self, n: Node) -> bool:
        if n.rank != 1 or self.once(n):
            return False
        w, x = n.inputs
        return (self.stored_matrix(w) and self.row_input(x)
                and x.size // self.W >= ROW_MATVEC_CHUNKS)

    def block_matmul(self, n: Node) -> bool:
        """W @ x of an input row and a stored once matrix with BLOCK_MIN_OUTPUTS
        rows or more (or BLOCK_MIN_ELEMENTS elements and BLOCK_MIN_ROWS rows), or
        x @ A of any size."""
        if n.rank != 1 or self.once(n):
            return False
        w, x = n.inputs
        if self.stored_matrix(w) and self.row_input(x):
            H = n.size
            return H >= BLOCK_MIN_OUTPUTS or (H >= BLOCK_MIN_ROWS
                                              and w.size >= BLOCK_MIN_ELEMENTS)
        x, a = n.inputs
        return self.row_input(x) and self.stored_matrix(a)

    def outer_gradient(self, b: Builder, key: str, n: Node):
        """outer_grad for the output `key` if it is a per-sample gradient s * x or
        outer(u, v) the kernels take, else None."""
        if (self.W < 2 or not (key.startswith("grad.") and key.endswith(".sample"))
                or n.op != "mul"):
            return None     # (the kernels accumulate over the vector loop's lane groups)
        factors = self.scaled_row(n) if n.rank == 1 else (
            self.outer_factors(n) if n.rank == 2 and n.size >= OUTER_MIN_SIZE else None)
        if factors is None:
            return None
        u, v = factors
        kind = "rows" if self.row_input(v) else "block"
        return b.emit("outer_grad", (self.new[u.id], self.new[v.id]), kind=kind)

    def row_scatter(self, b: Builder, key: str, n: Node):
        """row_scatter for a row-sparse parameter's per-sample gradient, else None."""
        name = key[len("grad."):].rsplit(".", 1)[0]
        if not key.endswith(".sample") or name not in self.sparse:
            return None
        xs = [self.new[x.id] for pair in row_terms(n) for x in pair]
        return b.emit("row_scatter", xs, size=n.shape[0])

    def scaled_row(self, n: Node):
        """(s, x) if n is s * x of a per-sample scalar s (broadcast) and an input row x."""
        for bc, x in (n.inputs, n.inputs[::-1]):
            if (self.row_input(x) and bc.op == "broadcast" and bc.attr("dims") == ()
                    and bc.inputs[0].rank == 0 and not self.once(bc.inputs[0])
                    and bc.inputs[0].dtype == REAL):
                return bc.inputs[0], x
        return None

    def outer_factors(self, n: Node):
        """(u, v) if n is outer(u, v) of two per-sample vectors, else None."""
        a, c = n.inputs
        for x, y in ((a, c), (c, a)):
            if (x.op == y.op == "broadcast" and x.attr("dims") == (0,)
                    and y.attr("dims") == (1,) and not self.once(x.inputs[0])
                    and not self.once(y.inputs[0])):
                return x.inputs[0], y.inputs[0]
        return None

    # ------------------------------------------------------------ what is paired, shared

    def softmax_pairs(self) -> dict:
        """logsumexp(z) -> exp(z - logsumexp(z)), for the pairs the rule takes."""
        pairs = {}
        for n in self.graph.nodes:
            if n.op != "exp" or n.rank != 1:
                continue
            d = n.inputs[0]
            if d.op != "sub" or d.inputs[1].op != "broadcast" or d.inputs[1].attr("dims"):
                continue
            z, lse = d.inputs[0], d.inputs[1].inputs[0]
            if (lse.op == "logsumexp" and lse.inputs[0] is z and lse.rank == 0
                    and z.shape == n.shape and z.size <= PAIR_MAX
                    and self.once(lse) == self.once(n) and lse.id not in pairs):
                pairs[lse.id] = n
        return pairs

    @staticmethod
    def root(x: Node) -> Node:
        """z for x = z or x = -z: exp(-|x|) is exp(-|z|)."""
        return x.inputs[0] if x.op == "neg" else x

    def shared_exponentials(self) -> set:
        """The functions of SHARED_EXP of z or -z that share their exponential of |z|
        with another: sigmoids, softpluses and log_sigmoids of scalars, and tanh with
        its derivative of any shape, per sample (the gradient of a layer: its
        exponential is then stored, for both to read; a tensor computed once per call
        may be large, and is left to compute its exponential twice rather than hold a
        third buffer of its size)."""
        users: dict[tuple, list] = {}
        for n in self.graph.nodes:
            if n.op in SHARED_EXP and (n.rank == 0 or (
                    SHARED_EXP[n.op][0] == "expm1_2abs" and not self.once(n))):
                key = (SHARED_EXP[n.op][0], self.root(n.inputs[0]).id)
                users.setdefault(key, []).append(n.id)
        return {i for ids in users.values() if len(ids) > 1 for i in ids}
