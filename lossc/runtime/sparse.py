"""Row-sparse gradients from Python: the records the gradient function fills with the
rows a batch touched (codegen/sparse.py, abi.ROW_GRADS), and their sparse form for
users.

A parameter used only through gathers (`E[u]`, `E[tok]`), with no other term in its
gradient, is row-sparse: the artifact lists it under `sparse_rows`, with the rows its
gradient touches per sample. Every frame that calls the gradient (runtime/calls.py
Frame, the fused training steps) holds a `RowRecords`: one RowGrads record per such
parameter, sized for the frame's batch (nothing in it is sized by the parameter's
rows: even the hash table that finds a touched row's slot is the batch's size). With
`dense` on (the default) the native call also writes the parameter's dense gradient,
as value_and_grad returns it; off, only the touched rows, for
Model.value_and_sparse_grad and the training steps.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from lossc.codegen.abi import ROW_GRADS


@dataclass(frozen=True)
class SparseRows:
    """The gradient of a row-sparse parameter: the rows it touched and theirs. `rows`
    holds each touched row once, ascending (int64); `values[k]` is the gradient of row
    rows[k] (shape (len(rows), *shape[1:])), repeated uses of a row added up; every
    other row's gradient is 0. Unpacks as `rows, values = g` (PyTorch: a coalesced
    sparse COO tensor's indices and values)."""

    rows: np.ndarray
    values: np.ndarray
    shape: tuple

    def __iter__(self):
        return iter((self.rows, self.values))

    def to_dense(self) -> np.ndarray:
        """The dense gradient, zeros but the touched rows."""
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out[self.rows] = self.values
        return out


class RowRecords:
    """A frame's RowGrads records, one per row-sparse parameter in declaration order:
    `address` goes in the frame's `sparse` slot (0 for a model without any)."""

    def __init__(self, model, dense: bool = True):
        self.dtype = model.dtype
        per_sample = model.sparse_rows
        self.specs = [(p, int(per_sample[p.name])) for p in model.signature.params
                      if p.name in per_sample]
        self.table = (ROW_GRADS.struct * max(len(self.specs), 1))()
        self.address = ctypes.addressof(self.table) if self.specs else 0
        self.hashes, self.rows, self.grads = [], [], []
        for _ in self.specs:
            self.hashes.append(None)
            self.rows.append(None)
            self.grads.append(None)
        self.capacity = -1
        self.set_dense(dense)
        self.fit(1)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def set_dense(self, dense: bool) -> None:
        for k in range(len(self.specs)):
            self.table[k].dense = int(dense)

    def fit(self, B: int) -> None:
        """Room for a batch of B samples: each record's rows for the smaller of B x
        the rows a sample touches and the parameter's rows (a row takes one slot a
        call), and one sink row more; a hash table of at least twice as many words
        (a power of two). Grows, never shrinks."""
        if B <= self.capacity:
            return
        for k, (p, per) in enumerate(self.specs):
            rows_now = self.table[k].capacity if self.rows[k] is not None else -1
            need = min(B * per, p.shape[0])
            if need <= rows_now:
                continue
            cap = min(max(need, 2 * rows_now), p.shape[0])
            width = p.size // p.shape[0]
            self.rows[k] = np.zeros(max(cap, 1), dtype=np.int64)
            self.grads[k] = np.zeros((cap + 1) * width, dtype=self.dtype)
            words = 1 << max(2 * cap - 1, 1).bit_length()
            self.hashes[k] = np.zeros(words, dtype=np.int64)      # (every entry free)
            rec = self.table[k]
            rec.rows, rec.grads = self.rows[k].ctypes.data, self.grads[k].ctypes.data
            rec.table, rec.mask = self.hashes[k].ctypes.data, words - 1
            rec.capacity = cap
        self.capacity = B

    def touched(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of record k's touched rows (in the order first touched) and their
        gradients (count, *row shape), as the last call left them."""
        p, _ = self.specs[k]
        n = self.table[k].count
        width = p.size // p.shape[0]
        return self.rows[k][:n], self.grads[k][:n * width].reshape((n,) + p.shape[1:])


def sparse_rows(spec, parts: list) -> SparseRows:
    """The SparseRows of a parameter from the (weight, rows, values) of one call, or of
    each chunk of a batch split across threads (in chunk order): a row touched in
    several chunks gets their weighted gradients added in chunk order, from 0, as the
    dense gradient adds the chunks'."""
    if len(parts) == 1:
        w, rows, values = parts[0]
        order = np.argsort(rows, kind="stable")
        values = values[order] if w == 1.0 else w * values[order]
        return SparseRows(rows[order], values, tuple(spec.shape))
    rows = np.concatenate([r for _, r, _ in parts])
    values = np.concatenate([w * v for w, _, v in parts])
    unique, where = np.unique(rows, return_inverse=True)
    out = np.zeros((len(unique),) + tuple(spec.shape[1:]), dtype=values.dtype)
    np.add.at(out, where, values)
    return SparseRows(unique, out, tuple(spec.shape))
