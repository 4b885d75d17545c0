"""The predictions of a model (`output name = ...`): the exported function

    i32 lossc_predict(i64* frame)

of the model functions' frame (codegen/llvm.py), its last slot (the gradient's) a
table of one T* per output, in declaration order. An output that depends on an input
is written per sample, row i of a (B + padding, *shape) array: the vector loop's last
iteration computes whole groups of lanes, and the rows past B it writes are the
caller's padding (abi.PREDICT_PADDING), never read. An output that depends on no input is
computed once and written to row 0. The loop, the lanes, the padded last iteration
and the index checks are the model functions' own: only what happens to each
output's values differs (stored, not added up).
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.llvm import FunctionCodegen
from lossc.codegen.values import is_vector
from lossc.ir.graph import Node


class PredictCodegen(FunctionCodegen):
    def __init__(self, module: ir.Module, graph, dtype: str, name: str, vector_bits: int):
        super().__init__(module, graph, dtype, False, name, vector_bits)
        self.keys = [k for k in graph.outputs if k.startswith("out.")]
        self.tables = None

    def outputs(self) -> dict[str, Node]:
        return {k: self.graph.outputs[k] for k in self.keys}

    def sample_outputs(self, outs: dict) -> dict:
        return {k: v for k, v in outs.items() if v.id in self.plan.vary}

    def output_pointer(self, key: str):
        """The output's array (the k-th entry of the table in the frame's last slot),
        loaded where the function starts."""
        if self.tables is None:
            em = self.em
            b = ir.IRBuilder(em.entry)
            table = b.bitcast(em.grad, em.T.as_pointer().as_pointer())
            self.tables = {k: b.load(b.gep(table, [em.iconst(i)]))
                           for i, k in enumerate(self.keys)}
        return self.tables[key]

    def accumulate(self, groups: list, key: str, node: Node) -> None:
        """Store each lane's value in its sample's row."""
        em, b = self.em, self.em.b
        out = self.output_pointer(key)
        size = em.iconst(max(node.size, 1))
        with em.loops(node.shape) as idx:
            j = em.flat(node.shape, idx)
            for g in groups:
                v = em.elem(g, node, idx)
                for lane in range(g.lanes):
                    row = b.add(g.sample, em.iconst(lane)) if lane else g.sample
                    x = b.extract_element(v, em.iconst(lane)) if is_vector(v) else v
                    b.store(x, b.gep(out, [b.add(b.mul(row, size), j)]))

    def reduce_lanes(self, n_grad: int) -> None:
        """(nothing is accumulated across lanes)"""

    def epilogue(self, outs: dict, loss_acc) -> None:
        """The outputs no input reaches, computed once, into row 0."""
        em, b = self.em, self.em.b
        for key, node in outs.items():
            if node.id in self.plan.vary:
                continue
            out = self.output_pointer(key)
            with em.loops(node.shape) as idx:
                j = em.flat(node.shape, idx)
                b.store(em.elem(self.once, node, idx), b.gep(out, [j]))
