"""The compiled model users hold: argument validation around the native functions.

Every argument is checked before any native call (names, shapes, dtypes, batch sizes,
integer inputs), so no call can make the native code read outside an array. Arrays are
copied only when they are not already C-contiguous in the model's dtype.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np

from lossc.runtime.spec import Signature

_VOIDP_ARRAY = {}


def _addr(a: np.ndarray) -> int:
    # cheaper than a.ctypes.data, which builds a ctypes object per call
    return a.__array_interface__["data"][0]


def _shape_text(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


class Model:
    """A `.loss` file compiled to native code for this CPU.

    `loss` and `value_and_grad` take the parameters as a dict (see `init_params`), the
    inputs as keyword arrays with the batch first, and hyperparameters as keyword
    numbers (defaults from the file).
    """

    def __init__(self, signature: Signature, dtype: str, native, work_size: int, meta: dict,
                 native_object: bytes = b""):
        self.signature = signature
        self.native_object = native_object
        self.dtype = np.dtype(dtype)
        self.native = native
        self.work_size = work_size
        self.meta = meta
        self._vg = native.functions["lossc_value_and_grad"]
        self._loss = native.functions["lossc_loss"]
        self._input_names = [i.name for i in signature.inputs]
        self._hyper_index = {h.name: k for k, h in enumerate(signature.hypers)}
        self._default_hypers = np.array([h.default for h in signature.hypers] or [0.0],
                                        dtype=self.dtype)
        self._ptrs_type = ctypes.c_void_p * max(1, len(signature.inputs))
        self._err = np.zeros(3, dtype=np.int64)

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
    def n_params(self) -> int:
        return self.signature.n_params

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    def __repr__(self) -> str:
        ps = ", ".join(f"{p.name}{list(p.shape) if p.shape else ''}" for p in self.params)
        xs = ", ".join(f"{i.name}{list(i.shape) if i.shape else ''}{': int' if i.is_int else ''}"
                       for i in self.inputs)
        return (f"<lossc.Model {self.meta.get('name', '')} params({ps}) inputs({xs}) "
                f"{self.dtype.name}>")

    # ------------------------------------------------------------ parameters

    def init_params(self, seed: int = 0) -> dict:
        """Initial values as the file declares them, drawn from `seed`."""
        rng = np.random.default_rng(seed)
        out = {}
        for p in self.params:
            kind, args = p.init
            if kind == "const":
                v = np.full(p.shape, args[0])
            elif kind == "normal":
                v = rng.normal(args[0], args[1], size=p.shape)
            elif kind == "uniform":
                v = rng.uniform(args[0], args[1], size=p.shape)
            elif kind == "glorot":
                fan_out, fan_in = (p.shape + (1, 1))[:2] if len(p.shape) == 2 else (
                    (p.shape[0], p.shape[0]) if p.shape else (1, 1))
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                v = rng.uniform(-limit, limit, size=p.shape)
            else:
                raise ValueError(f"unknown initializer {kind!r} for {p.name}")
            out[p.name] = np.asarray(v, dtype=self.dtype)
        return out

    def pack_params(self, theta: dict, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The flat parameter vector (declaration order, C order within each)."""
        if not isinstance(theta, dict):
            raise TypeError(f"parameters must be a dict of arrays with keys "
                            f"{[p.name for p in self.params]}, got {type(theta).__name__}")
        names = {p.name for p in self.params}
        extra = [k for k in theta if k not in names]
        if extra:
            raise ValueError(f"unknown parameter {extra[0]!r}; the model's parameters are "
                             f"{sorted(names)}")
        flat = np.empty(self.n_params, dtype=self.dtype) if out is None else out
        for p in self.params:
            if p.name not in theta:
                raise ValueError(f"missing parameter {p.name!r} (shape {_shape_text(p.shape)})")
            v = _as_real(theta[p.name], f"parameter {p.name!r}", self.dtype)
            if v.shape != p.shape:
                raise ValueError(f"parameter {p.name!r} must have shape {_shape_text(p.shape)}, "
                                 f"got {_shape_text(v.shape)}")
            flat[p.offset:p.offset + p.size] = v.reshape(-1)
        return flat

    def unpack_params(self, flat: np.ndarray) -> dict:
        flat = np.asarray(flat)
        if flat.shape != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},), got "
                             f"{_shape_text(flat.shape)}")
        return {p.name: flat[p.offset:p.offset + p.size].reshape(p.shape).copy()
                for p in self.params}

    # ------------------------------------------------------------ calls

    def loss(self, theta: dict, **kwargs) -> float:
        """The objective over the batch."""
        flat = self.pack_params(theta)
        data, hypers = self._split_kwargs(kwargs)
        return self.loss_flat(flat, data, hypers)

    def value_and_grad(self, theta: dict, **kwargs) -> tuple[float, dict]:
        """The objective and its gradient, a dict shaped like `theta`."""
        flat = self.pack_params(theta)
        data, hypers = self._split_kwargs(kwargs)
        value, grad = self.value_and_grad_flat(flat, data, hypers)
        return value, self.unpack_params(grad)

    def value_and_grad_flat(self, theta_flat, data: Optional[dict] = None,
                            hypers: Optional[dict] = None, grad_out=None):
        """Low-level: flat parameters in, (value, flat gradient) out."""
        theta = self._flat(theta_flat)
        bound = self.bind(data or {}, hypers)
        out = np.empty(1 + self.n_params, dtype=self.dtype)
        self._call(self._vg, theta, bound, out)
        grad = out[1:]
        if grad_out is not None:
            grad_out[...] = grad
            grad = grad_out
        return float(out[0]), grad

    def loss_flat(self, theta_flat, data: Optional[dict] = None,
                  hypers: Optional[dict] = None) -> float:
        theta = self._flat(theta_flat)
        bound = self.bind(data or {}, hypers)
        out = np.empty(1, dtype=self.dtype)
        self._call(self._loss, theta, bound, out)
        return float(out[0])

    def save(self, path) -> None:
        """Write a `.lossc` artifact: machine code for this CPU and the signature."""
        from lossc.runtime import artifact
        artifact.write(path, self.meta, self.native_object)

    def scipy_objective(self, hypers: Optional[dict] = None, **data):
        """(fun, x0) for scipy.optimize.minimize(fun, x0, jac=True)."""
        from lossc.optim.scipy_bridge import scipy_objective
        return scipy_objective(self, hypers=hypers, **data)

    # ------------------------------------------------------------ binding arguments

    def bind(self, data: dict, hypers: Optional[dict] = None) -> "BoundArgs":
        """Validate and convert a batch once, for repeated calls (the low-level path)."""
        if isinstance(data, BoundArgs):
            return data
        arrays, B = self._check_inputs(data)
        return BoundArgs(self, arrays, B, self._hyper_vector(hypers or {}))

    def _split_kwargs(self, kwargs: dict):
        data, hypers = {}, {}
        for k, v in kwargs.items():
            if k in self._hyper_index:
                hypers[k] = v
            elif k in self._input_names:
                data[k] = v
            else:
                raise ValueError(f"unknown argument {k!r}; the model takes inputs "
                                 f"{self._input_names} and hyperparameters "
                                 f"{list(self._hyper_index)}")
        return data, hypers

    def _flat(self, theta_flat) -> np.ndarray:
        a = np.asarray(theta_flat)
        if a.shape != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},), got "
                             f"{_shape_text(a.shape)}")
        return np.ascontiguousarray(_as_real(a, "flat parameters", self.dtype))

    def _hyper_vector(self, hypers: dict) -> np.ndarray:
        if not hypers:
            return self._default_hypers
        v = self._default_hypers.copy()
        for k, x in hypers.items():
            if k not in self._hyper_index:
                raise ValueError(f"unknown hyperparameter {k!r}; the model's hyperparameters "
                                 f"are {list(self._hyper_index)}")
            a = np.asarray(x)
            if a.shape != () or a.dtype.kind not in "biuf":
                raise ValueError(f"hyperparameter {k!r} must be a real number, got "
                                 f"{x!r}")
            v[self._hyper_index[k]] = float(a)
        return v

    def _check_inputs(self, data: dict):
        for k in data:
            if k not in self._input_names:
                raise ValueError(f"unknown input {k!r}; the model's inputs are "
                                 f"{self._input_names}")
        arrays, B, first = [], None, None
        for spec in self.inputs:
            if spec.name not in data:
                raise ValueError(f"missing input {spec.name!r}: expected an array of shape "
                                 f"{_shape_text(('B',) + spec.shape)}")
            a = np.asarray(data[spec.name])
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

    def _call(self, fn, theta: np.ndarray, bound: "BoundArgs", out: np.ndarray) -> None:
        work = np.empty(self.work_size, dtype=self.dtype)
        err = np.zeros(3, dtype=np.int64)
        rc = fn(_addr(theta), _addr(bound.hypers), ctypes.addressof(bound.pointers), bound.B,
                _addr(out), _addr(work), _addr(err))
        if rc != 0:
            raise self._index_error(err, bound)

    def _index_error(self, err, bound: "BoundArgs") -> ValueError:
        check, sample, value = (int(v) for v in err)
        info = self.meta["index_checks"][check]
        ints = ", ".join(f"{s.name} = {int(a[sample])}"
                         for s, a in zip(self.inputs, bound.arrays) if s.is_int)
        return ValueError(f"index {info['text']} = {value} is out of range 0..{info['size'] - 1} "
                          f"at sample {sample} (line {info['line']}, col {info['col']}"
                          f"{'; ' + ints if ints else ''})")


class BoundArgs:
    """Validated inputs and hyperparameters, ready for native calls."""

    def __init__(self, model: Model, arrays: list, B: int, hypers: np.ndarray):
        self.arrays = arrays          # kept alive while the pointers are in use
        self.B = B
        self.hypers = hypers
        self.pointers = model._ptrs_type(*[_addr(a) for a in arrays])


def _as_real(x, what: str, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
    return a.astype(dtype, copy=False)


def _as_int(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype.kind in "iub":
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"int input {name!r} holds {a.flat[i]} at sample {i}; "
                             "it must hold integers")
        frac = a != np.round(a)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise ValueError(f"int input {name!r} holds {a.flat[i]} at sample {i}; "
                             "it must hold integers")
        if (np.abs(a) > 2 ** 62).any():
            raise ValueError(f"int input {name!r} holds values too large for an index")
        return np.ascontiguousarray(a, dtype=np.int64)
    raise TypeError(f"int input {name!r} must hold integers, got dtype {a.dtype}")
