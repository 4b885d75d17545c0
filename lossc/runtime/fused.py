"""Fused training from Python: lossc_train_steps_* (codegen/fused.py) over an epoch.

`FusedSteps` holds one optimizer's state in native layout, the batch buffers and the
frame, for one model and one bound data set. For a model with row-sparse parameters
(runtime/sparse.py) it holds their RowGrads records too, and where the update of the
rows a batch did not touch is no update at all (SGD without momentum or weight decay:
p - lr * 0 is p) or is asked to be none (lazy Adam, torch.optim.SparseAdam's rule),
the steps update the touched rows only, and the gradient writes no dense gradient for
those parameters: a step costs what the batch touches, not the tables' size. `run(theta, order, first, count)` takes
`count` optimizer steps in one native call (the GIL released), updating theta in place
and returning the batches' objectives. `sync()` writes the state back into the
optimizer object, so the Python loop can take over where the native one stopped.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lossc.codegen import abi
from lossc.codegen.abi import ERROR, TRAIN_CONFIG, TRAIN_FLAGS, TRAIN_STEPS
from lossc.codegen.fused import AHEAD_BATCHES
from lossc.codegen.unit_names import VALUE_AND_GRAD, train_unit
from lossc.runtime.calls import BoundArgs, _addr, aligned_empty, aligned_zeros, index_error
from lossc.runtime.sparse import RowRecords

# the batches on their way to L2 (codegen/fused.py AHEAD_BATCHES) may hold this many
# bytes of rows at most, a small part of L2 (a quarter of 1 MB, the L2 of a core of
# the machines lossc is measured on): more would push the current batch out
AHEAD_MAX_BYTES = 256 << 10


@dataclass(frozen=True)
class NativeUpdate:
    """An optimizer's update as the native steps take it (lossc.optim.optimizers gives
    it: Optimizer.native_update). `kind` names the steps (abi.OPTIMIZER_KINDS); the
    numbers and switches fill the TRAIN_CONFIG and TRAIN_FLAGS records by name; `state`
    names the optimizer's state arrays held in the native state's three rows (None: a
    row it has not), `used` those the update keeps, handed back by sync()."""

    kind: str
    lr: float
    a: float = 0.0
    b: float = 0.0
    eps: float = 0.0
    weight_decay: float = 0.0
    dampening: float = 0.0
    clip_norm: Optional[float] = None
    nesterov: bool = False
    centered: bool = False
    amsgrad: bool = False
    decoupled: bool = False
    state: tuple = (None, None, None)
    used: frozenset = frozenset()
    lazy: bool = False      # Adam: touched rows only, SparseAdam's rule (not in a record)

    def rows_only(self) -> bool:
        """Whether the rows of row-sparse parameters a batch did not touch are left as
        they are: exactly so by SGD without momentum or weight decay, by choice with
        lazy Adam."""
        if self.clip_norm is not None:
            return False
        if self.kind == "sgd":
            return self.a == 0 and self.weight_decay == 0
        return self.kind == "adam" and self.lazy

    def configure(self, config, flags) -> None:
        """Fill a TRAIN_CONFIG and a TRAIN_FLAGS record."""
        for name in ("lr", "a", "b", "eps", "weight_decay", "dampening"):
            setattr(config, name, getattr(self, name))
        config.clip_norm = self.clip_norm or 0.0
        config.half = 0.5               # (the record's `half`)
        flags.kind = abi.OPTIMIZER_KINDS[self.kind]
        for name in ("nesterov", "centered", "amsgrad", "decoupled"):
            setattr(flags, name, int(getattr(self, name)))
        flags.clip = int(self.clip_norm is not None)


class FusedError(Exception):
    """The native run stopped: `kind` is "index" or "diverged", `batch` where. For an
    index, `index_error` is the ValueError to show (the sample counted in the data
    set)."""

    def __init__(self, kind: str, batch: int, index_error: Optional[ValueError] = None):
        super().__init__(kind)
        self.kind, self.batch, self.index_error = kind, batch, index_error


def supports(optimizer) -> bool:
    """Whether the native steps implement this optimizer's update exactly."""
    native_update = getattr(optimizer, "native_update", None)
    return native_update is not None and native_update() is not None


class FusedSteps:
    def __init__(self, model, optimizer, data: BoundArgs, batch_size: int,
                 frozen: Optional[np.ndarray] = None):
        """optimizer: one whose native_update() gives a NativeUpdate (see supports);
        frozen: a uint8 per parameter, nonzero for one the steps leave as it is (its
        gradient taken as 0), or None."""
        self.model, self.opt, self.data = model, optimizer, data
        self.bs = int(batch_size)
        n = model.n_params
        self.update = optimizer.native_update()
        self.state = np.zeros((3, max(n, 1)), dtype=model.dtype)
        for k, name in enumerate(self.update.state):
            if name and name in optimizer.state:
                self.state[k, :n] = optimizer.state[name]
        self.t = np.array([optimizer.t], dtype=np.int64)
        # (on cache-line boundaries: a row 16 bytes into a line would straddle one more
        # line, and the gradient's vector loads from it would each touch two)
        self.batches = [aligned_empty((self.bs,) + s.shape,
                                      np.int64 if s.is_int else model.dtype)
                        for s in model.inputs]
        self.batch_ptrs = np.array([_addr(a) for a in self.batches] or [0], dtype=np.int64)
        n_batches = -(-data.B // self.bs)
        self.losses = np.zeros(n_batches, dtype=model.dtype)
        self.grad = np.zeros(max(n, 1), dtype=model.dtype)
        self.value = np.zeros(1, dtype=model.dtype)
        self.work = aligned_zeros(model.work_size, model.dtype)
        self.err = ERROR.new()
        # the row addresses of a batch a few on, input by input (codegen/fused.py), when
        # the batches on their way fit in L2 beside the current one with room to spare
        batch_bytes = self.bs * int(sum(self.row_bytes_of(model)))
        self.ahead = (np.zeros(max(1, self.bs * len(model.inputs)), dtype=np.int64)
                      if AHEAD_BATCHES * batch_bytes <= AHEAD_MAX_BYTES else None)
        # the steps are the same code for every model: the sizes come in the frame
        self.row_bytes = np.array(self.row_bytes_of(model) or [0], dtype=np.int64)
        # compiles the optimizer's steps the first time the model trains with it
        self.fn = model.code.function(train_unit(self.update.kind))
        self.config, self.flags = TRAIN_CONFIG.new(), TRAIN_FLAGS.new()
        self.update.configure(self.config, self.flags)
        # everything but the parameters, the order and the batch range stays put
        f = self.frame = TRAIN_STEPS.new()
        f.hypers, f.data, f.N = data.hypers_address, data.pointers_address, data.B
        f.batch_size = self.bs
        f.config, f.flags = ctypes.addressof(self.config), ctypes.addressof(self.flags)
        f.state, f.t, f.batches = _addr(self.state), _addr(self.t), _addr(self.batch_ptrs)
        f.losses, f.work, f.err = _addr(self.losses), _addr(self.work), ctypes.addressof(self.err)
        f.grad, f.value = _addr(self.grad), _addr(self.value)
        f.gradient = model.code.address(VALUE_AND_GRAD)
        f.n_params, f.n_inputs, f.row_bytes = model.n_params, len(model.inputs), \
            _addr(self.row_bytes)
        f.ahead = _addr(self.ahead) if self.ahead is not None else 0
        self.frozen = None if frozen is None else np.ascontiguousarray(frozen, dtype=np.uint8)
        f.frozen = _addr(self.frozen) if self.frozen is not None else 0
        # the row-sparse parameters' touched rows, and the parameters as segments for
        # the steps that update those rows only (see arrange)
        self.rows = RowRecords(model)
        self.rows.fit(self.bs)
        f.sparse = self.rows.address
        self.segments = self.segments_of(model, self.rows)
        self.arrange()
        self.frame_address = ctypes.addressof(f)

    @staticmethod
    def segments_of(model, rows: RowRecords) -> np.ndarray:
        """(offset, size, record or -1, row width) for each parameter."""
        record = {p.name: k for k, (p, _) in enumerate(rows.specs)}
        return np.array([[p.offset, p.size, record.get(p.name, -1),
                          p.size // p.shape[0] if p.shape else 1]
                         for p in model.signature.params] or [[0, 0, -1, 1]], dtype=np.int64)

    def arrange(self) -> None:
        """Touched rows only, where the update allows it and the model has row-sparse
        parameters; else the dense gradient and every parameter updated."""
        if self.update.lazy and self.frozen is not None and self.rows:
            raise ValueError("Adam(lazy=True) cannot train with frozen parameters "
                             "(freeze=): its rows are updated as the batches touch them")
        rows_only = bool(self.rows) and self.update.rows_only() and self.frozen is None
        self.rows.set_dense(not rows_only)
        f = self.frame
        f.segments = _addr(self.segments) if rows_only else 0
        f.n_segments = len(self.model.signature.params) if rows_only else 0
    @staticmethod
    def row_bytes_of(model) -> list:
        """Bytes of one sample of each input."""
        return [max(s.size, 1) * (8 if s.is_int else model.dtype.itemsize)
                for s in model.inputs]

    def run(self, theta: np.ndarray, order: np.ndarray, first: int, count: int) -> np.ndarray:
        """count optimizer steps on batches first.. of the epoch given by `order`."""
        update = self.opt.native_update()     # asked each time: a schedule may change lr
        if update != self.update:
            self.update = update
            update.configure(self.config, self.flags)
            self.arrange()
        f = self.frame
        f.params, f.order, f.first, f.count = _addr(theta), _addr(order), first, count
        rc = self.fn(self.frame_address)
        if rc == abi.INDEX_ERROR:
            raise FusedError("index", first, index_error(self.model, self.err, self.data))
        if rc == abi.DIVERGED:
            raise FusedError("diverged", self.err.batch)
        return self.losses[first:first + count]

    def sync(self) -> None:
        """Hand the optimizer state back to the Python optimizer object."""
        opt, n = self.opt, self.model.n_params
        opt.t = int(self.t[0])
        if opt.t == 0:
            return
        for k, name in enumerate(self.update.state):
            if name in self.update.used:
                opt.state[name] = self.state[k, :n].copy()
