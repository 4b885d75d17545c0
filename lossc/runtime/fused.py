"""Fused training from Python: lossc_train_steps_* (codegen/fused.py) over an epoch.

`FusedSteps` holds one optimizer's state in native layout, the batch buffers and the
frame, for one model and one bound data set. `run(theta, order, first, count)` takes
`count` optimizer steps in one native call (the GIL released), updating theta in place
and returning the batches' objectives. `sync()` writes the state back into the
optimizer object, so the Python loop can take over where the native one stopped.
"""
from __future__ import annotations

import numpy as np

from lossc.codegen.fused import ADAM, AHEAD_BATCHES, RMSPROP, SGD, SLOTS
from lossc.codegen.llvm import ERR_SLOTS
from lossc.codegen.units import VALUE_AND_GRAD, train_unit
from lossc.runtime.calls import BoundArgs, _addr, aligned_empty, aligned_zeros

# the batches on their way to L2 (codegen/fused.py AHEAD_BATCHES) may hold this many
# bytes of rows at most, a small part of L2 (a quarter of 1 MB, the L2 of a core of
# the machines lossc is measured on): more would push the current batch out
AHEAD_MAX_BYTES = 256 << 10

# the native steps of each optimizer class (codegen/fused.py KINDS)
_KIND = {"SGD": "sgd", "RMSprop": "rmsprop", "Adam": "adam", "AdamW": "adam"}

# optimizer state names (lossc.optim.optimizers) in the native state's three slots
_STATE_NAMES = {
    "SGD": ("momentum", None, None),
    "RMSprop": ("momentum", "square_avg", "grad_avg"),
    "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}


class FusedError(Exception):
    """The native run stopped: `kind` is "index" or "diverged", `batch` where."""

    def __init__(self, kind: str, batch: int, err):
        super().__init__(kind)
        self.kind, self.batch, self.err = kind, batch, err


def supports(optimizer) -> bool:
    """Whether the native update implements this optimizer exactly."""
    from lossc.optim import optimizers as o
    return type(optimizer) in (o.SGD, o.RMSprop, o.Adam, o.AdamW) and optimizer.l1 is None


def _config(opt):
    """(config, flags) for the native update, as tuples; see codegen/fused.py."""
    name = type(opt).__name__
    clip = opt.clip_norm if opt.clip_norm is not None else 0.0
    if name == "SGD":
        cfg = (opt.lr, opt.momentum, 0.0, 0.0, opt.weight_decay, opt.dampening, clip)
        flags = (SGD, opt.nesterov, 0, 0, 0)
    elif name == "RMSprop":
        cfg = (opt.lr, opt.alpha, opt.momentum, opt.eps, opt.weight_decay, 0.0, clip)
        flags = (RMSPROP, 0, opt.centered, 0, 0)
    else:
        cfg = (opt.lr, opt.betas[0], opt.betas[1], opt.eps, opt.weight_decay, 0.0, clip)
        flags = (ADAM, 0, 0, opt.amsgrad, name == "AdamW")
    # (0.5: see the frame's slot 8 in codegen/fused.py)
    return cfg + (0.5,), flags + (opt.clip_norm is not None,)


class FusedSteps:
    def __init__(self, model, optimizer, data: BoundArgs, batch_size: int):
        self.model, self.opt, self.data = model, optimizer, data
        self.bs = int(batch_size)
        n = model.n_params
        self.state = np.zeros((3, max(n, 1)), dtype=model.dtype)
        for k, name in enumerate(_STATE_NAMES[type(optimizer).__name__]):
            if name and name in optimizer.state:
                self.state[k, :n] = optimizer.state[name]
        self.had = {name for name in optimizer.state}
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
        self.err = np.zeros(ERR_SLOTS, dtype=np.int64)
        # the row addresses of a batch a few on, input by input (codegen/fused.py), when
        # the batches on their way fit in L2 beside the current one with room to spare
        batch_bytes = self.bs * int(sum(self.row_bytes_of(model)))
        self.ahead = (np.zeros(max(1, self.bs * len(model.inputs)), dtype=np.int64)
                      if AHEAD_BATCHES * batch_bytes <= AHEAD_MAX_BYTES else None)
        # the steps are the same code for every model: the sizes come in the frame
        self.row_bytes = np.array(self.row_bytes_of(model) or [0], dtype=np.int64)
        # compiles the optimizer's steps the first time the model trains with it
        self.fn = model.code.function(train_unit(_KIND[type(optimizer).__name__]))
        self.config = _config(optimizer)
        self.cfg = np.array(self.config[0], dtype=np.float64)
        self.flags = np.array(self.config[1], dtype=np.int64)
        # everything but the parameters, the order and the batch range stays put
        self.frame = np.array(
            (0, data.hypers_address, data.pointers_address, data.B, 0, self.bs, 0, 0,
             _addr(self.cfg), _addr(self.flags), _addr(self.state), _addr(self.t),
             _addr(self.batch_ptrs), _addr(self.losses), _addr(self.work), _addr(self.err),
             _addr(self.grad), _addr(self.value), model.code.address(VALUE_AND_GRAD),
             model.n_params, len(model.inputs), _addr(self.row_bytes),
             _addr(self.ahead) if self.ahead is not None else 0),
            dtype=np.int64)
        assert len(self.frame) == SLOTS
        self.frame_address = _addr(self.frame)

    @staticmethod
    def row_bytes_of(model) -> list:
        """Bytes of one sample of each input."""
        return [max(s.size, 1) * (8 if s.is_int else model.dtype.itemsize)
                for s in model.inputs]

    def run(self, theta: np.ndarray, order: np.ndarray, first: int, count: int) -> np.ndarray:
        """count optimizer steps on batches first.. of the epoch given by `order`."""
        config = _config(self.opt)       # read each time: a schedule may change lr
        if config != self.config:
            self.config = config
            self.cfg[:], self.flags[:] = config
        f = self.frame
        f[0], f[4], f[6], f[7] = _addr(theta), _addr(order), first, count
        rc = self.fn(self.frame_address)
        if rc == 1:
            raise FusedError("index", first, self.err[:3].copy())
        if rc == 2:
            done = int(self.err[0])
            raise FusedError("diverged", done, self.err[:3].copy())
        return self.losses[first:first + count]

    def sync(self) -> None:
        """Hand the optimizer state back to the Python optimizer object."""
        opt, n = self.opt, self.model.n_params
        opt.t = int(self.t[0])
        for k, name in enumerate(_STATE_NAMES[type(opt).__name__]):
            if not name:
                continue
            used = opt.t > 0 and self._slot_used(name)
            if used:
                opt.state[name] = self.state[k, :n].copy()

    def _slot_used(self, name: str) -> bool:
        opt = self.opt
        kind = type(opt).__name__
        if kind == "SGD":
            return opt.momentum != 0
        if kind == "RMSprop":
            return {"momentum": opt.momentum > 0, "grad_avg": opt.centered}.get(name, True)
        return name != "max_exp_avg_sq" or opt.amsgrad
