"""How a model's compiled gradient is called: one interface, three ways.

Every call of lossc_value_and_grad goes through a frame (runtime/calls.py: the
argument slots, the parameter and gradient buffers, scratch space) and one of three
ways of getting the arguments into it, which differ in what they check, and when:

    CheckedCall    every argument checked and converted, at every call: a first call,
                   new arrays, new hyperparameters
    RepeatedCall   the frame's last batch again (an optimizer's loop): the inputs are
                   recognized as the very arrays bound last time, unchanged, so only
                   the parameters (and grad_out) are looked at
    PreparedCall   Model.prepare: everything checked once; each call is one native call

Each is a GradientCall: `value_and_grad` (parameters as a dict, inputs and
hyperparameters as keywords) and `value_and_grad_flat` (a flat parameter vector, a
batch) give (value, gradient), or DECLINED when the arguments are not the ones that way
was made for; the checked call never declines. `CallPaths` is what a model holds: for
each call it takes a frame from its pool (so concurrent calls from several threads each
have their own) and tries the frame's repeated call, then its checked call, which
teaches the repeated call the batch it bound. It also splits a large batch across
threads (by default one per core the process may run on; Model.set_threads).

What the repeated call saves is Python: for logistic regression at B=256 the checked
call spends some 4.5 us checking and converting around 1.2 us of native work, the
repeated call some 1.5 us (docs/runtime.md has the figures and how they were measured).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from math import copysign
from typing import Optional

import numpy as np

from lossc.runtime import forks
from lossc.runtime.calls import (BoundArgs, Frame, _addr, array_state, copy_of, data_pointer,
                                  index_error)
from lossc.runtime.sparse import sparse_rows
from lossc.runtime.workers import Workers

# below this many samples per thread, a thread costs more than it saves (the default of
# Model.set_threads): batches below twice this run on the calling thread, whatever the
# thread count
PARALLEL_MIN_SAMPLES = 16384
# ... unless each sample's inputs are large: a thread's share is then worth its cost from
# this many bytes of input (what PARALLEL_MIN_SAMPLES samples of W2's D = 32 rows hold),
# so a wide model splits a batch of a few thousand rows (parallel_min_samples)
PARALLEL_MIN_BYTES = 4 << 20
PARALLEL_MIN_SAMPLES_WIDE = 64


def parallel_min_samples(signature, itemsize: int) -> int:
    """The samples per thread from which a model's batches are split across threads:
    PARALLEL_MIN_SAMPLES, or fewer where the samples' inputs reach PARALLEL_MIN_BYTES
    sooner (at least PARALLEL_MIN_SAMPLES_WIDE)."""
    per_sample = sum(max(i.size, 1) * (8 if i.is_int else itemsize)
                     for i in signature.inputs)
    if per_sample == 0:
        return PARALLEL_MIN_SAMPLES
    return max(PARALLEL_MIN_SAMPLES_WIDE,
               min(PARALLEL_MIN_SAMPLES, -(-PARALLEL_MIN_BYTES // per_sample)))
DECLINED = None                # what a way of calling returns for arguments not its own
_HYPER_TYPES = (float, int)    # the hyperparameters a repeated call can recognize


class GradientCall(ABC):
    """One way of calling a model's compiled gradient: what it checks, and when."""

    @abstractmethod
    def value_and_grad(self, theta: dict, kwargs: dict):
        """(value, gradient dict shaped like theta), or DECLINED."""

    @abstractmethod
    def value_and_grad_flat(self, theta_flat, data, hypers: Optional[dict], grad_out):
        """(value, flat gradient: grad_out if given), or DECLINED."""


def _gradients(f: Frame) -> dict:
    """A copy of each parameter's part of the frame's gradient (the caller's to keep:
    the next call overwrites the frame), cheaper than one copy and a view of it for
    each; (a loop, not a comprehension: that is a function call before Python 3.12)."""
    grads = {}
    for name, g in f.grad_views:
        grads[name] = g.copy()
    return grads


class CheckedCall(GradientCall):
    """Every argument checked (names, shapes, dtypes, batch sizes, integer inputs,
    memory shared between arrays) and converted where it must be, at every call."""

    def __init__(self, paths: "CallPaths", frame: Frame):
        self.paths, self.model, self.frame = paths, paths.model, frame

    def value_and_grad(self, theta, kwargs):
        m, f = self.model, self.frame
        m._pack(theta, f.theta_views)
        f.use_own_buffers(self.bind(kwargs))
        self.paths.run(m._vg, f)
        return f.value.item(), _gradients(f)

    def value_and_grad_flat(self, theta_flat, data, hypers, grad_out):
        m, f = self.model, self.frame
        f.use_theta(m._flat(theta_flat))
        f.use_grad()
        f.use(self.bind_data(data, hypers))
        if grad_out is not None:
            m._check_out(grad_out)
            m._check_disjoint(theta_flat, grad_out, f.bound)
        self.paths.run(m._vg, f)
        if grad_out is not None:
            grad_out[...] = f.grad
            return f.value.item(), grad_out
        return f.value.item(), f.grad.copy()

    def bind(self, kwargs: dict) -> BoundArgs:
        """The batch of a keyword call: inputs and hyperparameters by name."""
        m = self.model
        if not kwargs:
            if m.inputs:
                m._check_inputs({})      # raises: the inputs are missing
            return m._no_inputs
        data, hypers = m._split_kwargs(kwargs)
        return m.bind(data, hypers)

    def bind_data(self, data, hypers) -> BoundArgs:
        """The batch of a flat call: a bind() result, a dict of inputs, or nothing."""
        m = self.model
        if not hypers and type(data) is BoundArgs:
            return m.own_bound(data)
        if data is None and not hypers and not m.inputs:
            return m._no_inputs
        return m.bind(data or {}, hypers)


class RepeatedCall(GradientCall):
    """The frame's last batch again. A keyword call is recognized by its arrays: the
    same objects, unchanged in shape, strides, dtype and data address (ndarray.resize
    moves the data, and resizing back restores the shape), each used as it was given
    (not a converted copy, which could have gone stale), and the same hyperparameters
    (Python numbers, equal, 0.0 told from -0.0). A flat call is recognized by its
    bind() result, with no hyperparameters beside it; its parameter vector and grad_out
    must be the model's dtype and size, C-contiguous, and are used where they are (the
    gradient written straight into grad_out). Anything else declines, for the checked
    call to explain or convert."""

    def __init__(self, paths: "CallPaths", frame: Frame):
        self.paths, self.model, self.frame = paths, paths.model, frame
        # the batch of a call without keywords (None: the model has inputs)
        self.no_kwargs = None if self.model.inputs else self.model._no_inputs
        self.kwargs_batch = None    # (names, inputs, hyperparameters, bound): see batch()
        self.flat_bound = None      # the bind() result of the last flat call
        self.apart = None           # parameters and grad_out found apart: see _apart

    # ------------------------------------------------------------ keyword calls

    def value_and_grad(self, theta, kwargs):
        # (the frame's setter and _gradients written out: each call of a helper costs
        # a few percent of a small model's whole repeated call)
        bound = self.batch(kwargs)
        if bound is None:
            return DECLINED
        m, f = self.model, self.frame
        m._pack(theta, f.theta_views)
        if f.own_batch is not bound:
            f.use_own_buffers(bound)
        if bound.B >= m._parallel_from:
            self.paths.run(m._vg, f)
        elif m._vg(f.address):        # (run's one-thread case, without the cost of a call)
            raise index_error(m, f.err, bound)
        grads = {}
        for name, g in f.grad_views:
            grads[name] = g.copy()
        return f.value.item(), grads

    def batch(self, kwargs: dict) -> Optional[BoundArgs]:
        """The batch bound by the last keyword call, if `kwargs` are that batch again."""
        if not kwargs:
            return self.no_kwargs
        last = self.kwargs_batch
        if last is None or len(kwargs) != last[0]:
            return None
        for name, a, head, head_bytes, dims, dims_bytes, _ in last[1]:
            if kwargs.get(name) is not a or head.raw != head_bytes or dims.raw != dims_bytes:
                return None
        for name, value in last[2]:
            v = kwargs.get(name)
            # (equal numbers, and 0.0 and -0.0 told apart: 1/h differs)
            if v is not value and (type(v) not in _HYPER_TYPES or v != value
                                   or (not v and copysign(1, v) != copysign(1, value))):
                return None
        return last[3]

    def learn(self, kwargs: dict, bound: BoundArgs) -> None:
        """Remember the batch a checked keyword call bound from `kwargs`, if its arrays
        were used as given and its hyperparameters are Python numbers."""
        m = self.model
        arrays = []
        for spec, a in zip(m.inputs, bound.arrays):
            if kwargs.get(spec.name) is not a:
                self.kwargs_batch = None
                return
            arrays.append((spec.name, a) + array_state(a))
        hypers = tuple((k, v) for k, v in kwargs.items() if k not in m._input_set)
        if any(type(v) not in _HYPER_TYPES for _, v in hypers):
            self.kwargs_batch = None
            return
        self.kwargs_batch = (len(kwargs), arrays, hypers, bound)

    # ------------------------------------------------------------ flat calls

    def value_and_grad_flat(self, theta_flat, data, hypers, grad_out):
        m = self.model
        if data is None and not m.inputs:
            data = m._no_inputs       # (a model without inputs: its one batch)
        if (data is not self.flat_bound or data is None or hypers
                or data.B >= m._parallel_from):
            return DECLINED           # (threads: the checked call combines their parts)
        theta = theta_flat
        if (type(theta) is not np.ndarray or theta.dtype is not m.dtype
                or theta.shape != (m.n_params,) or not theta.flags.c_contiguous):
            return DECLINED
        f = self.frame
        if grad_out is None:
            f.use_address(_addr(theta))
            f.use_grad()
        else:
            m._check_out(grad_out)
            theta_at, grad_at = self._apart(theta, grad_out, data)
            f.use_address(theta_at)
            f.use_grad(grad_at)
        f.use(data)
        if m._vg(f.address):
            raise index_error(m, f.err, data)
        if grad_out is None:
            return f.value.item(), f.grad.copy()
        return f.value.item(), grad_out

    def learn_flat(self, data, hypers) -> None:
        """Remember the batch of a checked flat call, if it is a bind() result."""
        if data is None and not self.model.inputs:
            data = self.model._no_inputs
        self.flat_bound = data if type(data) is BoundArgs and not hypers else None

    def _apart(self, theta: np.ndarray, grad_out: np.ndarray, bound: BoundArgs) -> tuple:
        """The data addresses of theta and grad_out, after checking that they share no
        memory with each other or the batch (a ValueError naming them if they do). The
        check runs once per pair of arrays: the same two objects at the same addresses,
        checked before for this batch, are still apart."""
        known = self.apart
        if (known is not None and theta is known[0] and grad_out is known[1]
                and bound is known[2] and known[3].value == known[5]
                and known[4].value == known[6]):
            return known[5], known[6]
        self.model._check_disjoint(theta, grad_out, bound)
        tp, gp = data_pointer(theta), data_pointer(grad_out)
        self.apart = (theta, grad_out, bound, tp, gp, tp.value, gp.value)
        return tp.value, gp.value


class PreparedCall(GradientCall):
    """See Model.prepare: the parameter vector, the batch and the gradient's array fixed
    and checked once; each call is one native call, reading the parameters as they are
    then and writing the gradient into grad_out."""

    def __init__(self, model, theta: np.ndarray, bound: BoundArgs, grad: np.ndarray):
        self.model, self.theta, self.bound, self.grad = model, theta, bound, grad
        self.frame = Frame(model)
        self.frame.use_address(_addr(theta))
        self.frame.use(bound)
        self.frame.use_grad(_addr(grad))
        self._fn = model._vg
        self._address = self.frame.address
        self._value = self.frame.value

    def __call__(self) -> float:
        if self._fn(self._address):
            raise index_error(self.model, self.frame.err, self.bound)
        return self._value.item()

    def value_and_grad(self, theta, kwargs):
        return DECLINED              # (its parameters are a flat vector)

    def value_and_grad_flat(self, theta_flat, data=None, hypers=None, grad_out=None):
        if (theta_flat is not self.theta or (data is not None and data is not self.bound)
                or hypers or (grad_out is not None and grad_out is not self.grad)):
            return DECLINED
        return self(), self.grad


class _FrameCalls:
    """A frame and its two ways of being called."""

    __slots__ = ("frame", "work_size", "checked", "repeated")

    def __init__(self, paths: "CallPaths"):
        self.frame = Frame(paths.model)
        self.work_size = self.frame.work_size
        self.checked = CheckedCall(paths, self.frame)
        self.repeated = RepeatedCall(paths, self.frame)


class CallPaths:
    """A model's ways of calling its native code. Each call takes a frame from a pool
    (a new one when every frame is in use: one per thread calling at once) and gives it
    back; in a single thread every call gets the same frame, so the repeated call sees
    the last call's batch. A frame has the scratch space of the code units compiled
    when it was made: the gradient's always, the objective's (compiled on first use)
    not necessarily (take_for_any_unit)."""

    def __init__(self, model):
        self.model, self.code = model, model.code
        self._free: list[_FrameCalls] = []
        self._pool = None            # the threads of parallel runs

    def take(self) -> _FrameCalls:
        """A frame for a call of the gradient (whose scratch space every frame holds)."""
        try:
            return self._free.pop()
        except IndexError:
            return _FrameCalls(self)

    def take_for_any_unit(self) -> _FrameCalls:
        """A frame with the scratch space of every code unit compiled so far (the
        objective's, compiled on first use, may need more than the gradient's)."""
        calls = self.take()
        return calls if calls.work_size >= self.code.work_size else _FrameCalls(self)

    def give(self, calls: _FrameCalls) -> None:
        self._free.append(calls)

    # ------------------------------------------------------------ the gradient

    # (take() and give() written out in the two calls that repeat: a method call costs
    # a tenth of a small model's whole repeated call)

    def value_and_grad(self, theta: dict, kwargs: dict) -> tuple[float, dict]:
        free = self._free
        try:
            calls = free.pop()
        except IndexError:
            calls = _FrameCalls(self)
        try:
            out = calls.repeated.value_and_grad(theta, kwargs)
            if out is DECLINED:
                out = calls.checked.value_and_grad(theta, kwargs)
                calls.repeated.learn(kwargs, calls.frame.bound)
            return out
        finally:
            free.append(calls)

    def value_and_grad_flat(self, theta_flat, data, hypers, grad_out):
        free = self._free
        try:
            calls = free.pop()
        except IndexError:
            calls = _FrameCalls(self)
        try:
            out = calls.repeated.value_and_grad_flat(theta_flat, data, hypers, grad_out)
            if out is DECLINED:
                out = calls.checked.value_and_grad_flat(theta_flat, data, hypers, grad_out)
                calls.repeated.learn_flat(data, hypers)
            return out
        finally:
            free.append(calls)

    def checked_value_and_grad_flat(self, theta_flat, data, hypers, grad_out):
        calls = self.take()
        try:
            return calls.checked.value_and_grad_flat(theta_flat, data, hypers, grad_out)
        finally:
            self.give(calls)

    def value_and_sparse_grad(self, theta: dict, kwargs: dict) -> tuple[float, dict]:
        """value_and_grad with each row-sparse parameter's gradient as its touched rows
        (runtime/sparse.py SparseRows): the call writes no dense gradient for them."""
        calls = self.take()
        f = calls.frame
        try:
            bound = calls.repeated.batch(kwargs)
            if bound is None:
                bound = calls.checked.bind(kwargs)
                calls.repeated.learn(kwargs, bound)
            self.model._pack(theta, f.theta_views)
            f.use_own_buffers(bound)
            f.rows.set_dense(False)
            parts = self.run(self.model._vg, f, sparse=True)
            grads = {}
            for name, g in f.grad_views:
                if name not in self.model.sparse_rows:
                    grads[name] = g.copy()
            for k, (spec, _) in enumerate(f.rows.specs):
                grads[spec.name] = sparse_rows(spec, [(w, *rows[k]) for w, rows in parts])
            return f.value.item(), {p.name: grads[p.name] for p in self.model.params}
        finally:
            f.rows.set_dense(True)
            self.give(calls)

    # ------------------------------------------------------------ the objective alone

    def loss(self, fn, theta: dict, kwargs: dict) -> float:
        calls = self.take_for_any_unit()
        try:
            f = calls.frame
            self.model._pack(theta, f.theta_views)
            f.use_theta()
            bound = calls.repeated.batch(kwargs)
            if bound is None:
                bound = calls.checked.bind(kwargs)
                calls.repeated.learn(kwargs, bound)
            f.use(bound)
            self.run(fn, f)
            return f.value.item()
        finally:
            self.give(calls)

    def loss_flat(self, fn, theta_flat, data, hypers) -> float:
        calls = self.take_for_any_unit()
        try:
            f = calls.frame
            f.use_theta(self.model._flat(theta_flat))
            f.use(calls.checked.bind_data(data, hypers))
            self.run(fn, f)
            return f.value.item()
        finally:
            self.give(calls)

    def pack(self, theta: dict) -> np.ndarray:
        """Model.pack_params without `out`: packed where value_and_grad packs (a frame's
        buffer, free between calls, with its views made once), then copied out."""
        calls = self.take()
        try:
            f = calls.frame
            self.model._pack(theta, f.theta_views)
            return f.theta[:self.model.n_params].copy()
        finally:
            self.give(calls)

    # ------------------------------------------------------------ running

    def run(self, fn, f: Frame, sparse: bool = False):
        """The native function on the frame, on the model's threads if the batch is
        large enough; an index error raised. With `sparse` (the gradient, its frame's
        dense gradient of row-sparse parameters turned off): the touched rows of each
        part of the batch, [(weight, [(rows, values) per record])] (copies where
        threads computed them)."""
        m = self.model
        if f.bound.B >= m._parallel_from:
            if sparse:
                return self._run_parallel(fn, f, sparse=True)
            return self._run_parallel(fn, f)      # (as wrappers of it expect: tests)
        if fn(f.address):
            raise index_error(m, f.err, f.bound)
        if sparse:
            return [(1.0, [f.rows.touched(k) for k in range(len(f.rows.specs))])]
        return None

    def _run_parallel(self, fn, f: Frame, sparse: bool = False):
        """Split the batch into one contiguous chunk per thread; each runs the native
        function (which releases the GIL) into a frame of its own; chunk results are
        combined in chunk order, so the result is the same on every run for a given
        thread count. Each chunk's objective already includes the once-per-call terms,
        scaled as its reduction says, so mean chunks are weighted by their share of the
        batch and sum chunks add up."""
        m = self.model
        pool = self._pool           # (one read: set_threads may drop it meanwhile)
        if pool is None or pool.count != m.threads:
            pool = self._pool = Workers(m.threads)
            forks.renew_in_child(self)
        bound, theta = f.bound, f.frame.params
        chunks = bound.chunks(m.threads)

        # The workers read the parameters by address, so each task holds the arrays
        # behind it (the frame's own, or the caller's in f.keep): a call interrupted
        # while it waits (KeyboardInterrupt) returns with tasks still queued or running,
        # and the caller's next call replaces f.keep, which must not free the array
        # under them (a worker reading pages given back to the system crashes).
        def run(chunk, holds=(f, f.keep)):
            calls = self.take_for_any_unit()
            try:
                wf = calls.frame
                wf.use_address(theta)
                wf.use_grad()
                wf.use(chunk)
                wf.rows.set_dense(not sparse)
                rc = fn(wf.address)
                rows = [tuple(a.copy() for a in wf.rows.touched(k))
                        for k in range(len(wf.rows.specs))] if sparse else None
                return rc, chunk, wf.value[0], wf.grad.copy(), copy_of(wf.err), rows
            finally:
                wf.rows.set_dense(True)
                self.give(calls)

        results = pool.map(run, chunks)
        for rc, chunk, _, _, err, _ in results:
            if rc != 0:
                raise index_error(m, err, chunk)
        weights = [c.B / bound.B if m.reduce == "mean" else 1.0 for c in chunks]
        f.value[0] = sum(w * r[2] for w, r in zip(weights, results))
        if fn is m._vg:
            f.grad[...] = 0
            for w, r in zip(weights, results):
                f.grad += w * r[3]
        if m.reduce == "sum" and m.signature.penalty:
            self._count_penalty_once(fn, f, theta, len(chunks))
        if sparse:
            return [(w, r[5]) for w, r in zip(weights, results)]
        return None

    def _count_penalty_once(self, fn, f: Frame, theta: int, n_chunks: int) -> None:
        """Under `reduce sum` the chunks' objectives add up, and each holds the penalty
        once: take away all but one. The penalty alone is the objective of an empty
        batch (under `reduce sum` its per-sample and once-per-call terms count 0
        times). (A frame of its own: f is the caller's.)"""
        m = self.model
        wf = Frame(m)
        wf.use_address(theta)
        wf.use_grad()
        wf.use(BoundArgs(m, [a[:0] for a in f.bound.arrays], 0, f.bound.hypers))
        fn(wf.address)
        f.value[0] -= (n_chunks - 1) * wf.value[0]
        if fn is m._vg:
            f.grad -= (n_chunks - 1) * wf.grad

    def threads_changed(self, n: int) -> None:
        """Model.set_threads(n): a pool of another count is dropped now, and its threads
        end once no call is using it; otherwise they would wait until the next split
        call, which a model pinned to one thread never makes."""
        pool = self._pool
        if pool is not None and pool.count != n:
            self._pool = None

    def _after_fork_in_child(self) -> None:
        """In a child made by os.fork: the pool's threads stayed in the parent (work
        handed to them here would wait forever); the next parallel call makes a pool
        of the child's own. (runtime/forks.py)"""
        self._pool = None
