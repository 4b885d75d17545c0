"""The compiled model users hold: argument validation around the native functions.

Every argument is checked before any native call (names, shapes, dtypes, batch sizes,
integer inputs), so no call can make the native code read outside an array. Arrays are
copied only when they are not already C-contiguous in the model's dtype.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from lossc.memory import check_array_fits
from lossc.codegen.abi import ERROR, PREDICT_PADDING
from lossc.codegen.abi import VALUE_AND_GRAD as VALUE_AND_GRAD_FRAME
from lossc.codegen.unit_names import LOSS, PREDICT, VALUE_AND_GRAD
from lossc.options import Options, is_integer
from lossc.runtime.callpaths import CallPaths, PreparedCall, parallel_min_samples
from lossc.runtime.calls import BoundArgs, _addr, aligned_zeros, as_array, index_error
from lossc.runtime.code import ModelCode
from lossc.runtime.spec import Signature


def _check_hyper_range(name: str, a: np.ndarray, dtype: np.dtype) -> None:
    """A ValueError naming the hyper if a finite value of `a` is beyond the model
    dtype's range (1e39 for a float32 model became an infinity without a word, as data
    past it is refused). A NaN or an infinity is taken as given (docs/language.md)."""
    flat = np.asarray(a, dtype=np.float64).ravel()
    big = flat[np.isfinite(flat) & (np.abs(flat) > np.finfo(dtype).max)]
    if big.size:
        raise ValueError(f"hyperparameter {name!r} is {float(big[0])!r}, beyond {dtype}'s "
                         "range")


def _shape_text(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"



class Model:
    """A `.loss` file compiled to native code for this CPU.

    `loss` and `value_and_grad` take the parameters as a dict (see `init_params`), the
    inputs as keyword arrays with the batch first, and hyperparameters as keyword
    numbers (defaults from the file).
    """

    def __init__(self, signature: Signature, dtype: str, code: "ModelCode", meta: dict,
                 options: Options, calls_beyond: Optional["CallsBeyond"] = None):
        """calls_beyond: what the layers above give a model made from source (lossc.api):
        its rebuilding from a pickle, and calls on Dask collections; None: neither."""
        self.signature = signature
        self.calls_beyond = calls_beyond
        self.options = options       # how its code was made and is loaded (lossc.options)
        self.dtype = np.dtype(dtype)
        self.code = code             # the machine code, unit by unit (runtime/code.py)
        self.meta = meta
        self._vg = code.function(VALUE_AND_GRAD)
        self._loss = None            # compiled on first use
        self.n_params = signature.n_params
        # {name: rows a sample touches} of the row-sparse parameters (runtime/sparse.py)
        self.sparse_rows = dict(meta.get("sparse_rows") or {})
        self._view_index = [
            (p.name, (p.offset, Ellipsis) if not p.shape else slice(p.offset, p.offset + p.size),
             p.shape if len(p.shape) > 1 else None) for p in signature.params]
        self._offsets = {p.name: p.offset for p in signature.params}
        self._input_names = [i.name for i in signature.inputs]
        self._input_set = set(self._input_names)
        self._hyper_index = {h.name: h for h in signature.hypers}
        self._largest = float(np.finfo(self.dtype).max)     # (a hyper past it is refused)
        self._default_hypers = np.array(
            [v for h in signature.hypers for v in np.ravel(h.default)] or [0.0],
            dtype=self.dtype)
        self._no_inputs = BoundArgs(self, [], 1, self._default_hypers)
        self._paths = CallPaths(self)   # how calls reach the native code (callpaths.py)
        # threads for large batches: by default the options' (OMP_NUM_THREADS, else one
        # per core the process may run on); see set_threads
        self.set_threads(options.threads)

    # ------------------------------------------------------------ description

    @property
    def params(self):
        return self.signature.params

    @property
    def inputs(self):
        return self.signature.inputs

    @property
    def hypers(self):
        return self.signature.hypers

    @property
    def reduce(self) -> str:
        return self.signature.reduce

    @property
    def outputs(self):
        """The `output` declarations: OutputSpec(name, shape, inputs it needs)."""
        return self.signature.outputs

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    def __repr__(self) -> str:
        ps = ", ".join(f"{p.name}{list(p.shape) if p.shape else ''}" for p in self.params)
        xs = ", ".join(f"{i.name}{list(i.shape) if i.shape else ''}{': int' if i.is_int else ''}"
                       for i in self.inputs)
        return (f"<lossc.Model {self.meta.get('name', '')} params({ps}) inputs({xs}) "
                f"{self.dtype.name}>")

    def __copy__(self) -> "Model":
        """A model of its own (frames, thread pool, remembered batches) over the same
        machine code, which never changes once loaded."""
        twin = Model(self.signature, self.dtype.name, self.code, self.meta, self.options,
                     self.calls_beyond)
        return twin.set_threads(None if self.threads_by_default else self.threads,
                                self.min_samples_per_thread)

    def __deepcopy__(self, memo) -> "Model":
        return self.__copy__()

    def __reduce__(self):
        """A pickle carries what the model is made from (its source, dims, dtype and
        options; runtime/pickled.py), never its machine code: unpickling compiles the
        source again or takes the unpickling process's own compile-cache entry, as
        lossc.compile does (lossc.api.model_from_pickle)."""
        from lossc.runtime import pickled
        state = pickled.state_of(self)
        return self.calls_beyond.rebuild, (state,)

    def set_threads(self, n: Optional[int],
                    min_samples_per_thread: Optional[int] = None) -> "Model":
        """Use n threads for batches of at least min_samples_per_thread samples per
        thread (by default as many as make a thread worth its cost: fewer for samples
        with large inputs, callpaths.parallel_min_samples); smaller batches run on the
        calling thread. n=1 pins the model to one thread; None: the default a
        model starts with (Options.threads: OMP_NUM_THREADS, else one per core the
        process may run on). Results are deterministic for a given n; they may differ
        from another n in the last bits, as any reordered floating-point sum does."""
        by_default = n is None
        n = self.options.thread_count() if n is None else _count(n, "threads")
        if min_samples_per_thread is None:
            min_samples_per_thread = parallel_min_samples(self.signature,
                                                          self.dtype.itemsize)
        min_samples_per_thread = _count(min_samples_per_thread, "min_samples_per_thread")
        self.threads = n
        # (a pickled model whose count is the default takes the default of the process
        # it goes to, whose cores may be others: runtime/pickled.py)
        self.threads_by_default = by_default
        self._paths.threads_changed(n)
        self.min_samples_per_thread = min_samples_per_thread
        # the smallest batch split across threads (CallPaths.run; one thread: none)
        self._parallel_from = n * self.min_samples_per_thread if n > 1 else _NEVER
        return self

    def splits(self, B: int) -> bool:
        """Whether a batch of B samples is split across the model's threads (set_threads);
        a prepared call (prepare) runs on the calling thread whatever B is."""
        return B >= self._parallel_from

    # ------------------------------------------------------------ parameters

    def init_params(self, seed: int = 0) -> dict:
        """Initial values as the file declares them, drawn from `seed`."""
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as e:
            raise ValueError(f"seed must be an integer >= 0 (or None), got {seed!r} ({e})") \
                from None
        out = {}
        for p in self.params:
            check_array_fits(p.shape, self.dtype, f"parameter '{p.name}'")
        for p in self.params:
            kind, args = p.init
            if kind == "const":
                v = np.full(p.shape, args[0])
            elif kind == "normal":
                v = rng.normal(args[0], args[1], size=p.shape)
            elif kind == "uniform":
                lo, hi = args
                if np.isfinite(hi - lo):
                    v = rng.uniform(lo, hi, size=p.shape)
                else:       # (NumPy's OverflowError: the width past the largest float)
                    u = rng.random(size=p.shape)
                    v = lo * (1 - u) + hi * u
            elif kind == "glorot":
                fan_out, fan_in = (p.shape + (1, 1))[:2] if len(p.shape) == 2 else (
                    (p.shape[0], p.shape[0]) if p.shape else (1, 1))
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                v = rng.uniform(-limit, limit, size=p.shape)
            else:
                raise ValueError(f"unknown initializer {kind!r} for {p.name}")
            out[p.name] = np.asarray(v, dtype=self.dtype)
        return out

    def pack_params(self, theta: dict, /, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The flat parameter vector (declaration order, C order within each); written
        into `out` if given (a writable C-contiguous array of n_params in the model's
        dtype)."""
        if out is not None:
            self._check_out(out, "out")
            if isinstance(theta, dict):
                # (a value that is a view of `out` is read before `out` is written)
                theta = {k: v.copy() if isinstance(v, np.ndarray)
                         and np.may_share_memory(v, out) else v for k, v in theta.items()}
            self._pack(theta, self._param_views(out))
            return out
        return self._paths.pack(theta)

    def _pack(self, theta: dict, views: list) -> None:
        """Check `theta` and copy it into `views` (_param_views of a flat vector)."""
        if type(theta) is not dict and not isinstance(theta, dict):
            raise TypeError(f"parameters must be a dict of arrays with keys "
                            f"{[p.name for p in self.params]}, got {type(theta).__name__}")
        if len(theta) != len(views):
            extra = [k for k in theta if k not in self._offsets]
            if extra:
                raise ValueError(f"unknown parameter {extra[0]!r}; the model's parameters "
                                 f"are {sorted(self._offsets)}")
        dtype = self.dtype
        for name, shape, view, target, key in views:
            try:
                v = theta[name]
            except KeyError:
                raise ValueError(f"missing parameter {name!r} (shape {_shape_text(shape)})") \
                    from None
            # the common cases, without numpy's conversion overhead: an array already of
            # the right shape and a real dtype, and a scalar as a Python number. (A copy
            # into a view of the parameter's shape costs half a slice assignment.) An
            # array of the model's dtype for a scalar or a vector goes through the
            # memoryview `target`, which copies in half the time of ndarray's
            # assignment: a vector's checks the shape (raising ValueError), a scalar's
            # takes any value float() takes (a 1-element array, before NumPy 2.4), so
            # its array is checked to be 0-d first.
            t = type(v)
            if t is _ndarray:
                if v.dtype is dtype and target is not None and (shape or not v.ndim):
                    try:
                        target[key] = v
                        continue
                    except (ValueError, TypeError, NotImplementedError):
                        pass                # (another shape, or a read-only out: below)
                elif v.shape == shape and (v.dtype is dtype or v.dtype.kind in "fiu"):
                    view[...] = v
                    continue
            elif t in _SCALAR_TYPES and not shape:
                view[()] = v
                continue
            a = as_array(v, f"parameter {name!r}")
            if a.shape != shape:
                raise ValueError(f"parameter {name!r} must have shape {_shape_text(shape)}, "
                                 f"got {_shape_text(a.shape)}")
            if a.dtype.kind not in "biuf":
                raise TypeError(f"parameter {name!r} must hold real numbers, got dtype "
                                f"{a.dtype}")
            view[...] = a

    def unpack_params(self, flat: np.ndarray, /) -> dict:
        """A dict of arrays (copies) from a flat parameter vector."""
        a = as_array(flat, "flat parameters")
        if a.dtype.kind not in "biuf":
            raise TypeError(f"flat parameters must hold real numbers, got "
                            f"{type(flat).__name__ if a.dtype.kind == 'O' else a.dtype}")
        flat = np.array(a, dtype=self.dtype)
        if flat.shape != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},), got "
                             f"{_shape_text(flat.shape)}")
        return self._views(flat)

    def _views(self, flat: np.ndarray) -> dict:
        # one indexing operation per parameter: (off, ...) gives a 0-d view, a slice a
        # vector; only matrices need a reshape
        return {name: flat[index] if shape is None else flat[index].reshape(shape)
                for name, index, shape in self._view_index}

    def _param_views(self, flat: np.ndarray) -> list:
        """(name, shape, view of flat with that shape, target, key) for each parameter,
        where _pack copies an array of the model's dtype with `target[key] = array`: for
        a scalar or a vector a memoryview of the view (key ... or :), which copies from
        an array of the same shape only; None for a matrix (memoryviews assign slices of
        one axis only) or a `flat` of another dtype, and _pack assigns to the view."""
        out = []
        for p, view in zip(self.signature.params, self._views(flat).values()):
            # (the view's own rank: an `out` of pack_params may give a vector's view
            # more axes, which a memoryview does not assign)
            target = memoryview(view) if view.ndim == len(p.shape) <= 1 \
                and view.dtype is self.dtype else None
            out.append((p.name, p.shape, view, target, slice(None) if p.shape else Ellipsis))
        return out

    # ------------------------------------------------------------ calls

    @property
    def work_size(self) -> int:
        """Elements of scratch space the compiled functions need."""
        return self.code.work_size

    def _loss_function(self):
        if self._loss is None:
            self._loss = self.code.function(LOSS)
        return self._loss

    def loss(self, theta: dict, /, **kwargs) -> float:
        """The objective over the batch. (Inputs may be dask arrays: see
        value_and_grad.)"""
        try:
            return self._paths.loss(self._loss_function(), theta, kwargs)
        except CollectionInputs:
            return self.value_and_grad(theta, **kwargs)[0]

    def value_and_grad(self, theta: dict, /, **kwargs) -> tuple[float, dict]:
        """The objective and its gradient, a dict shaped like `theta`. Inputs that are
        dask arrays (chunked along the batch axis) are computed chunk by chunk where
        the chunks live, on the active dask.distributed client or Dask's default
        scheduler (lossc/optim/dask_chunks.py), and summed in float64."""
        try:
            return self._paths.value_and_grad(theta, kwargs)
        except CollectionInputs as e:
            if self.calls_beyond is None:
                raise TypeError(f"input {e.name!r} is a Dask collection, which this "
                                "model (compiled from a graph) does not take") from None
            return self.calls_beyond.collection_value_and_grad(self, theta, kwargs)

    def value_and_sparse_grad(self, theta: dict, /, **kwargs) -> tuple[float, dict]:
        """value_and_grad, with the gradient of each row-sparse parameter (one used only
        through gathers, `E[u]`, `E[tok]`; `self.sparse_rows` names them) as the rows
        the batch touched: a `SparseRows` (rows, values), each row once, ascending.
        The call then costs what the touched rows do, not the table's size."""
        return self._paths.value_and_sparse_grad(theta, kwargs)

    def value_and_grad_flat(self, theta_flat, /, data=None, hypers: Optional[dict] = None,
                            grad_out=None):
        """Low-level: flat parameters in, (value, flat gradient) out. `data` may be a
        `bind()` result, validated once for repeated calls; with `grad_out` (a
        C-contiguous array of n_params in the model's dtype) the gradient is written
        there and no array is allocated."""
        return self._paths.value_and_grad_flat(theta_flat, data, hypers, grad_out)

    def checked_value_and_grad_flat(self, theta_flat, /, data=None,
                                    hypers: Optional[dict] = None, grad_out=None):
        """value_and_grad_flat with every argument checked, as on a first call, and
        nothing remembered for the next call: for calls that do not repeat (a training
        run's full-data passes between its mini-batch steps)."""
        return self._paths.checked_value_and_grad_flat(theta_flat, data, hypers, grad_out)

    def loss_flat(self, theta_flat, /, data=None, hypers: Optional[dict] = None) -> float:
        return self._paths.loss_flat(self._loss_function(), theta_flat, data, hypers)

    def prepare(self, theta_flat: np.ndarray, /, data=None, hypers: Optional[dict] = None,
                grad_out: Optional[np.ndarray] = None) -> "PreparedCall":
        """The fastest way to call the compiled gradient repeatedly (an optimizer's inner
        loop): everything is checked once, here, and each call is one native call.

            call = m.prepare(theta, bound, grad_out=g)   # theta, g: flat arrays you own
            value = call()      # reads theta as it is now, writes the gradient into g

        theta and grad_out must be C-contiguous arrays of n_params in the model's dtype;
        change theta in place between calls. A PreparedCall is for one thread."""
        theta = theta_flat
        if (type(theta) is not np.ndarray or theta.dtype != self.dtype
                or theta.shape != (self.n_params,) or not theta.flags.c_contiguous):
            raise ValueError(f"prepare() needs the parameters as a C-contiguous "
                             f"{self.dtype.name} array of shape ({self.n_params},)")
        grad = np.zeros(self.n_params, dtype=self.dtype) if grad_out is None else grad_out
        self._check_out(grad)
        bound = self.own_bound(data) if isinstance(data, BoundArgs) and not hypers else \
            self.bind(data or {}, hypers)
        self._check_disjoint(theta, grad, bound)
        return PreparedCall(self, theta, bound, grad)

    def predict(self, theta: dict, /, **kwargs) -> dict:
        """Every output for each sample: {name: array (B, *shape)} in the model's dtype
        (without the batch axis in a model without inputs), computed natively. Only the
        inputs some output depends on are needed; others may be given (and are
        checked) or left out."""
        fn = self.code.function(PREDICT)
        flat = np.zeros(max(self.n_params, 1), dtype=self.dtype)
        self._pack(theta, self._param_views(flat))
        bound = self._predict_batch(kwargs)
        once = {o.name for o in self.outputs if not o.inputs}
        B = bound.B
        outs = [aligned_zeros((1 if o.name in once else B + PREDICT_PADDING) * max(o.size, 1),
                              self.dtype) for o in self.outputs]
        table = np.array([_addr(a) for a in outs] or [0], dtype=np.int64)
        value = np.zeros(1, dtype=self.dtype)
        work = aligned_zeros(self.code.work_size, self.dtype)
        err = ERROR.new()
        frame = VALUE_AND_GRAD_FRAME.new()
        frame.params, frame.hypers = _addr(flat), bound.hypers_address
        frame.inputs, frame.B = bound.pointers_address, B
        frame.value, frame.work = _addr(value), _addr(work)
        frame.err, frame.grad = ctypes.addressof(err), _addr(table)
        if fn(ctypes.addressof(frame)) != 0:
            raise index_error(self, err, bound)
        result = {}
        for o, a in zip(self.outputs, outs):
            rows = a.reshape((-1,) + o.shape)
            if not self.inputs:
                result[o.name] = np.array(rows[0])      # (a 0-d array for a scalar)
            elif o.name in once:
                result[o.name] = np.repeat(rows[:1], B, axis=0)
            else:
                result[o.name] = rows[:B].copy()
        return result

    def _predict_batch(self, kwargs: dict) -> "BoundArgs":
        """The inputs and hypers of a predict call, checked: the inputs the outputs need
        must be there; those left out stand in as empty arrays the code never reads."""
        data, hypers = self._split_kwargs(kwargs)
        needed = {i for o in self.outputs for i in o.inputs}
        missing = [s.name for s in self.inputs if s.name in needed and s.name not in data]
        if missing:
            need = ", ".join(f"{s.name!r} {_shape_text(('B',) + s.shape)}"
                             for s in self.inputs if s.name in missing)
            raise ValueError(f"missing input {need}: the outputs "
                             f"{[o.name for o in self.outputs if set(o.inputs) & set(missing)]}"
                             " depend on it")
        if self.inputs and not data:
            raise ValueError(f"predict needs at least one input to know the batch size; "
                             f"the model's inputs are {self._input_names}")
        given = [s for s in self.inputs if s.name in data]
        arrays, B = self._check_inputs(data, given)
        by_name = dict(zip((s.name for s in given), arrays))
        full = [by_name.get(s.name, np.zeros((0,) + s.shape, np.int64 if s.is_int
                                              else self.dtype)) for s in self.inputs]
        return BoundArgs(self, full, B, self._hyper_vector(hypers))

    def save(self, path) -> None:
        """Write a `.lossc` artifact: machine code for this CPU (every code unit,
        compiled now if it was not yet, so loading it never needs LLVM) and the
        signature, signed with the key in the model's cache folder (options.cache_dir)."""
        from lossc.runtime import artifact
        objects = self.code.complete()
        artifact.write(path, dict(self.meta, work_size=self.code.work_size), objects,
                       self.options.cache_dir)

    def scipy_objective(self, /, **kwargs):
        """(fun, x0) for scipy.optimize.minimize(fun, x0, jac=True); the keywords are
        those of lossc.optim.scipy_objective (the inputs and hyperparameters by name)."""
        from lossc.runtime.scipy_bridge import scipy_objective
        return scipy_objective(self, **kwargs)

    # ------------------------------------------------------------ beyond the gradient
    # (runtime/derivatives.py: forward mode, compiled on first use, one thread)

    def jvp(self, theta: dict, tangent: dict, /, **kwargs) -> tuple[float, float]:
        """(objective, its directional derivative along `tangent`, <grad, tangent>):
        forward mode, one pass. `tangent` is a dict shaped like theta."""
        from lossc.runtime import derivatives
        return derivatives.jvp(self, theta, tangent, kwargs)

    def hvp(self, theta: dict, v: dict, /, **kwargs) -> dict:
        """The Hessian of the objective at theta times v (a dict shaped like theta), by
        forward mode over the gradient."""
        from lossc.runtime import derivatives
        return derivatives.hvp(self, theta, v, kwargs)

    def hvp_flat(self, theta_flat, v_flat, /, data=None, hypers: Optional[dict] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
        """Low-level hvp: flat parameters and direction in, H v as a flat vector out
        (into `out` if given); `data` may be a bind() result."""
        from lossc.runtime import derivatives
        theta = derivatives.flat_vector(self, theta_flat, "theta_flat")
        v = derivatives.flat_vector(self, v_flat, "v_flat")
        if out is not None:
            derivatives.check_out(self, out)
        return derivatives.hvp_flat(self, theta, v, self.bind(data or {}, hypers), out)

    def hessian(self, theta: dict, /, **kwargs) -> np.ndarray:
        """The (n_params, n_params) Hessian of the objective in pack_params order, a
        block of columns per native call; a ValueError past
        derivatives.MAX_HESSIAN_PARAMS parameters."""
        from lossc.runtime import derivatives
        return derivatives.hessian(self, theta, kwargs)

    def scipy_hessp(self, /, **kwargs):
        """hessp(x, p) -> H(x) p for scipy.optimize.minimize(..., hessp=...) (Newton-CG,
        trust-ncg, trust-krylov, trust-constr), next to scipy_objective; the keywords
        are the inputs and hyperparameters, bound once."""
        from lossc.runtime import derivatives
        return derivatives.scipy_hessp(self, kwargs)

    # ------------------------------------------------------------ binding arguments

    def bind(self, data: dict, /, hypers: Optional[dict] = None) -> "BoundArgs":
        """Validate and convert a batch once, for repeated calls (the low-level path)."""
        if isinstance(data, BoundArgs):
            data = self.own_bound(data)
            if hypers:
                # (the batch's hypers, those named here set on top of them)
                return BoundArgs(self, data.arrays, data.B,
                                 self._hyper_vector(hypers, data.hypers))
            return data
        arrays, B = self._check_inputs(data or {})
        return BoundArgs(self, arrays, B, self._hyper_vector(hypers or {}))

    def own_bound(self, bound: "BoundArgs") -> "BoundArgs":
        """bound, a bind() result, if this model's native code may read it: bound by
        this model, or by one whose inputs, hyperparameters and dtype are the same (a
        copy). Another model's arrays may be smaller than this one's inputs, which the
        native code would read past; a ValueError says so instead."""
        other = bound.model
        if other is not self and (other.dtype != self.dtype
                                  or other.signature.inputs != self.signature.inputs
                                  or other.signature.hypers != self.signature.hypers):
            raise ValueError("data was bound by another model, whose inputs, "
                             "hyperparameters or dtype differ from this one's: bind it "
                             "with this model (Model.bind)")
        return bound

    def _split_kwargs(self, kwargs: dict) -> tuple[dict, dict]:
        """(inputs, hyperparameters) of a keyword call, by name."""
        data, hypers = {}, {}
        for k, v in kwargs.items():
            if k in self._hyper_index:
                hypers[k] = v
            elif k in self._input_set:
                data[k] = v
            else:
                raise ValueError(f"unknown argument {k!r}; the model takes inputs "
                                 f"{self._input_names} and hyperparameters "
                                 f"{list(self._hyper_index)}")
        return data, hypers

    def _flat(self, theta_flat) -> np.ndarray:
        a = theta_flat
        if type(a) is not np.ndarray or a.dtype != self.dtype or not a.flags.c_contiguous:
            a = as_array(a, "flat parameters")
            if a.dtype.kind not in "biuf":
                raise TypeError(f"flat parameters must hold real numbers, got dtype {a.dtype}")
            a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.shape != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},), got "
                             f"{_shape_text(a.shape)}")
        return a

    def _check_out(self, g, argument: str = "grad_out") -> None:
        """A ValueError naming `argument` unless g is a flat vector the native code (or
        pack_params, through views of it) can write in place."""
        if type(g) is not np.ndarray or g.dtype != self.dtype or g.shape != (self.n_params,):
            ok = False
        else:
            flags = g.flags
            ok = flags.c_contiguous and flags.writeable
        if not ok:
            raise ValueError(f"{argument} must be a writable C-contiguous {self.dtype.name} "
                             f"array of shape ({self.n_params},)")

    def _check_disjoint(self, theta_flat, grad_out, bound: "BoundArgs") -> None:
        """A ValueError if the flat parameters, grad_out and the batch's inputs share
        memory: the gradient written over the parameters or an input would change what
        the call reads, or what the next one does."""
        named = [("theta_flat", theta_flat), ("grad_out", grad_out)] + [
            (f"input {s.name!r}", a) for s, a in zip(self.inputs, bound.arrays)]
        for k, (first, a) in enumerate(named[:2]):
            for second, other in named[k + 1:]:
                if np.shares_memory(a, other):
                    raise ValueError(f"{first} and {second} share memory; the native call "
                                     "needs separate arrays for them")

    def _hyper_vector(self, hypers: dict, base: Optional[np.ndarray] = None) -> np.ndarray:
        """The hyperparameter vector: `base` (a bound batch's; default, the file's) with
        those named in `hypers` set."""
        base = self._default_hypers if base is None else base
        if hypers is not None and not isinstance(hypers, dict):
            raise TypeError(f"hypers must be a dict name -> value, got "
                            f"{type(hypers).__name__}")
        if not hypers:
            return base
        v = base.copy()
        for k, x in hypers.items():
            if k not in self._hyper_index:
                raise ValueError(f"unknown hyperparameter {k!r}; the model's hyperparameters "
                                 f"are {list(self._hyper_index)}")
            spec = self._hyper_index[k]
            a = as_array(x, f"hyperparameter {k!r}")
            if spec.shape:
                if a.shape != spec.shape or a.dtype.kind not in "biuf":
                    got = (f"shape {_shape_text(a.shape)}" if a.dtype.kind in "biuf"
                           else f"{x!r}")
                    raise ValueError(f"hyperparameter {k!r} must be a real array of shape "
                                     f"{_shape_text(spec.shape)} (no batch axis), got {got}")
                _check_hyper_range(k, a, self.dtype)
                v[spec.offset:spec.offset + spec.size] = a.ravel()
                continue
            if a.shape != () or a.dtype.kind not in "biuf":
                raise ValueError(f"hyperparameter {k!r} must be a real number, got {x!r}")
            value = float(a)
            if math.isfinite(value) and abs(value) > self._largest:
                _check_hyper_range(k, a, self.dtype)
            v[spec.offset] = value
        return v

    def _check_inputs(self, data: dict, specs=None):
        """The inputs `specs` (default: all) of `data`, checked and converted, and the
        batch size."""
        for k in data:
            if k not in self._input_set:
                raise ValueError(f"unknown input {k!r}; the model's inputs are "
                                 f"{self._input_names}")
        arrays, B, first = [], None, None
        for spec in self.inputs if specs is None else specs:
            if spec.name not in data:
                raise ValueError(f"missing input {spec.name!r}: expected an array of shape "
                                 f"{_shape_text(('B',) + spec.shape)}")
            a = data[spec.name]
            if type(a) is not _ndarray and type(a).__module__.split(".")[0] == "dask":
                raise CollectionInputs(spec.name)      # (np.asarray would compute it all)
            a = as_array(a, f"input {spec.name!r}")
            want = ("B",) + spec.shape
            if a.ndim != len(want) or a.shape[1:] != spec.shape:
                raise ValueError(f"input {spec.name!r} must have shape {_shape_text(want)}, "
                                 f"got {_shape_text(a.shape)}")
            if B is None:
                B, first = a.shape[0], spec.name
            elif a.shape[0] != B:
                raise ValueError(f"batch sizes disagree: input {first!r} has {B} samples, "
                                 f"input {spec.name!r} has {a.shape[0]}")
            if spec.is_int:
                a = _as_int(a, spec.name)
            else:
                a = np.ascontiguousarray(_as_real(a, f"input {spec.name!r}", self.dtype))
            arrays.append(a)
        if B is None:
            B = 1           # a model with no inputs: the objective is the loss itself
        elif B == 0:
            raise ValueError("the batch is empty: inputs need at least one sample")
        return arrays, B


_ndarray = np.ndarray          # (a global: one attribute lookup less, per parameter)
_NEVER = 1 << 62                # a batch size no call reaches
_SCALAR_TYPES = (float, int, np.float64, np.float32)


class CollectionInputs(TypeError):
    """An input is a Dask collection: loss and value_and_grad go chunk by chunk
    (Model.value_and_grad); to the other calls it is this TypeError."""

    def __init__(self, name: str):
        super().__init__(f"input {name!r} is a Dask collection: loss and value_and_grad "
                         "take those (chunk by chunk), this call takes arrays in memory "
                         "(compute it, or call it on each chunk: docs/dask.md)")
        self.name = name


@dataclass(frozen=True)
class CallsBeyond:
    """What lossc.api gives the models it makes from source, from layers above the
    runtime: rebuild(state), the model a pickled state describes
    (runtime/pickled.py), and collection_value_and_grad(model, theta, kwargs), a call
    whose inputs include dask arrays (lossc/optim/dask_chunks.py)."""

    rebuild: Callable
    collection_value_and_grad: Callable


def _count(value, what: str) -> int:
    """A count of at least 1 given as an integer (NumPy's too): 2.5, "3" or True is a
    ValueError, as Options(threads=...) makes it, rather than a count rounded or
    parsed."""
    if not is_integer(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return int(value)


def _as_real(x, what: str, dtype: np.dtype) -> np.ndarray:
    """x as an array of `dtype`; a finite value beyond its range (float64's 1e39 for a
    float32 model), which would become an infinity the caller did not give, is a
    ValueError naming the sample, as in a data file (optim/data.py)."""
    a = as_array(x, what)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
    if a.dtype.kind != "f" or a.dtype.itemsize <= dtype.itemsize:
        return a.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        out = a.astype(dtype)
    infinite = np.isinf(out)
    if infinite.any():
        big = infinite & np.isfinite(a)
        if big.any():
            at = tuple(np.argwhere(big)[0])
            raise ValueError(f"{what} holds {float(a[at])!r} at sample {at[0]}, beyond "
                             f"{dtype}'s range (+-{float(np.finfo(dtype).max):.4g})")
    return out


def _as_int(a: np.ndarray, name: str) -> np.ndarray:
    """An int input as int64: any integer array whose values fit 64 bits (every signed
    dtype; uint64 up to 2^63 - 1), or a real array holding such whole numbers."""
    if a.dtype.kind in "ib" or (a.dtype.kind == "u" and a.dtype.itemsize < 8):
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "u":
        _refuse_first(a, a > np.iinfo(np.int64).max, name, "does not fit a 64-bit integer")
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "f":
        if a.dtype.itemsize < 8:
            # (exactly; a float16 compared with 2.0 ** 63 would overflow, with a warning)
            a = a.astype(np.float64)
        _refuse_first(a, ~np.isfinite(a), name, "it must hold integers")
        _refuse_first(a, a != np.round(a), name, "it must hold integers")
        # (float64 holds -2^63 and 2^63 exactly: the first fits int64, the second not)
        _refuse_first(a, (a < -2.0 ** 63) | (a >= 2.0 ** 63), name,
                      "does not fit a 64-bit integer")
        return np.ascontiguousarray(a, dtype=np.int64)
    raise TypeError(f"int input {name!r} must hold integers, got dtype {a.dtype}")


def _refuse_first(a: np.ndarray, bad: np.ndarray, name: str, why: str) -> None:
    """A ValueError naming the first bad value's sample (and its position in the
    sample, for an int vector), if any."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        sample, *position = np.unravel_index(i, a.shape)
        at = f"sample {sample}" + (f", position {', '.join(map(str, position))}"
                                   if position else "")
        raise ValueError(f"int input {name!r} holds {a.flat[i]} at {at}; {why}")
