"""The machinery of native calls: validated batches, frames, index errors.

`BoundArgs` is a batch checked once (arrays converted, pointers taken); `Frame` is a
reusable argument frame with its buffers for the native functions (the layout
codegen/abi.py declares, filled by slot name), used by one call at a time; `index_error` turns a native
call's error slots into the ValueError the caller sees. The ways of calling
(checked, repeated, prepared) are in runtime/callpaths.py.
"""
from __future__ import annotations

import ctypes
import math
from typing import Optional

import numpy as np

from lossc.codegen.abi import ERROR, VALUE_AND_GRAD
from lossc.runtime.sparse import RowRecords


def as_array(x, what: str) -> np.ndarray:
    """np.asarray(x); for a ragged nested sequence, a ValueError naming `what` (NumPy's
    own names no argument)."""
    try:
        return np.asarray(x)
    except ValueError:
        raise ValueError(f"{what} must be an array, got a ragged sequence (rows of "
                         "different lengths)") from None


def _addr(a: np.ndarray) -> int:
    """The address of an array's data, read from the array's struct where its layout is
    the one checked at import (see data_pointer), in half the time of the fastest way
    NumPy offers, c_char.from_buffer (a.ctypes.data builds a ctypes object), which the
    other arrays take (read-only ones: __array_interface__)."""
    if _ARRAY_DATA_OFFSET is not None and isinstance(a, np.ndarray):
        return _pointer_at(id(a) + _ARRAY_DATA_OFFSET).value or 0
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.__array_interface__["data"][0]


def _array_data_offset() -> Optional[int]:
    """Where an ndarray object keeps its data pointer, counted from id(a): NumPy's array
    struct (PyArrayObject_fields, public C API) starts with it, right after the object
    header. None if arrays of several kinds disagree with __array_interface__ (another
    NumPy or Python build): data_pointer then takes the slow way."""
    offset = object.__basicsize__       # (the struct is larger: the read stays inside)
    base = np.arange(12.0)
    for a in (base, base[5:], np.zeros((2, 3), np.int64), np.empty(0), base[::2].copy()):
        if ctypes.c_void_p.from_address(id(a) + offset).value != \
                a.__array_interface__["data"][0]:
            return None
    return offset


_ARRAY_DATA_OFFSET = _array_data_offset()
_pointer_at = ctypes.c_void_p.from_address


class _SlowDataPointer:
    """data_pointer where the array struct is not as expected."""

    def __init__(self, a: np.ndarray):
        self.a = a

    @property
    def value(self) -> int:
        return self.a.__array_interface__["data"][0]


def data_pointer(a: np.ndarray):
    """An object whose `value` is the address of `a`'s data as it is now (ndarray.resize
    can move it), read in 0.05 us where _addr takes 0.1 us. Keep `a` alive with it."""
    if _ARRAY_DATA_OFFSET is None:
        return _SlowDataPointer(a)
    return ctypes.c_void_p.from_address(id(a) + _ARRAY_DATA_OFFSET)


# An ndarray's struct after the object header (PyArrayObject_fields, NumPy's public C
# API): data pointer, nd (an int, padded to 8 bytes), dimensions and strides pointers,
# base, descr, flags (an int). NumPy allocates the strides right after the dimensions,
# in one block of 2 * nd integers.
_NDIM_AT, _DIMS_AT, _STRIDES_AT, _DESCR_AT = 8, 16, 24, 40
_HEAD_BYTES = 52               # data pointer .. flags


def _array_layout_known() -> bool:
    """Whether arrays of several kinds are laid out as above, by what NumPy reports of
    them (their data address, ndim, shape, strides and dtype), on a 64-bit build."""
    if _ARRAY_DATA_OFFSET is None or np.dtype(np.intp).itemsize != 8:
        return False
    base = np.arange(24.0)
    moved = np.zeros(6)
    moved.shape = (3, 2)
    for a in (base, base[5:].reshape(1, 19), np.zeros((2, 3, 4), np.int32)[:, ::2], moved,
              np.array(1.5), np.empty(0), base[::3]):
        at = id(a) + _ARRAY_DATA_OFFSET
        dims = _pointer_at(at + _DIMS_AT).value
        if (ctypes.c_int.from_address(at + _NDIM_AT).value != a.ndim
                or _pointer_at(at + _DESCR_AT).value != id(a.dtype)
                or (a.ndim and (_pointer_at(at + _STRIDES_AT).value != dims + 8 * a.ndim
                                or tuple((ctypes.c_int64 * (2 * a.ndim)).from_address(dims))
                                != a.shape + a.strides))):
            return False
    return True


_LAYOUT_KNOWN = _array_layout_known()
_NO_DIMS = (ctypes.c_char * 0)()


class _SlowState:
    """array_state where the array struct is not as expected: `raw` is what NumPy
    reports of the array."""

    def __init__(self, a: np.ndarray):
        self.a = a

    @property
    def raw(self) -> tuple:
        a = self.a
        return a.shape, a.strides, a.dtype, a.__array_interface__["data"][0]


def array_state(a: np.ndarray) -> tuple:
    """(head, head_bytes, dims, dims_bytes, dtype): `head.raw == head_bytes and
    dims.raw == dims_bytes` while `a` keeps its data address, shape, strides and dtype
    (ndarray.resize moves the data and can keep the shape; setting shape, strides or
    dtype changes the struct; dtype is held so that its address stays its own). Two
    reads of raw bytes from the array's struct and its block of dimensions and strides,
    read only while the struct still points at it: 0.05 us, where reading shape,
    strides, dtype and data_pointer takes 0.12 us. Keep `a` alive with it."""
    if _LAYOUT_KNOWN and type(a) is np.ndarray:
        at = id(a) + _ARRAY_DATA_OFFSET
        head = (ctypes.c_char * _HEAD_BYTES).from_address(at)
        dims = _NO_DIMS if not a.ndim else \
            (ctypes.c_char * (16 * a.ndim)).from_address(_pointer_at(at + _DIMS_AT).value)
        if not a.ndim or _pointer_at(at + _STRIDES_AT).value == \
                ctypes.addressof(dims) + 8 * a.ndim:
            return head, head.raw, dims, dims.raw, a.dtype
    slow = _SlowState(a)
    return slow, slow.raw, _NO_DIMS, b"", a.dtype


def _aligned(shape: tuple, dtype, alignment: int, allocate) -> np.ndarray:
    """An array of `shape` whose data starts on an `alignment`-byte boundary, carved
    from a byte array that `allocate` (np.empty or np.zeros) makes."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = allocate(nbytes + alignment, dtype=np.uint8)
    start = (-_addr(raw)) % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(n: int, dtype, alignment: int = 64) -> np.ndarray:
    """A zeroed array whose data starts on an `alignment`-byte boundary."""
    return _aligned((n,), dtype, alignment, np.zeros)


def aligned_empty(shape: tuple, dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialized array whose data starts on an `alignment`-byte boundary."""
    return _aligned(tuple(shape), dtype, alignment, np.empty)


def aligned_copy(a: np.ndarray, alignment: int = 64, allocate=np.empty) -> np.ndarray:
    """A C-contiguous copy of `a` whose data starts on an `alignment`-byte boundary, in
    bytes from allocate(nbytes, dtype=np.uint8) (np.empty by default)."""
    out = _aligned(a.shape, a.dtype, alignment, allocate)
    np.copyto(out, a)
    return out


CACHE_LINE = 64


def lines_per_row(row_bytes: int, offset: int) -> float:
    """The cache lines a row of an array touches on average, the array's data starting
    `offset` bytes into a line (rows follow each other: their offsets cycle)."""
    period = CACHE_LINE // math.gcd(row_bytes, CACHE_LINE)
    return sum(((offset + k * row_bytes) % CACHE_LINE + row_bytes + CACHE_LINE - 1)
               // CACHE_LINE for k in range(period)) / period


def misaligned_rows(a: np.ndarray) -> bool:
    """Whether a C-contiguous array's rows would touch fewer cache lines if its data
    started on a line: a 256-byte row 16 bytes into a line touches 5 lines, not 4, and
    every 64-byte vector load from it straddles two lines."""
    if a.ndim < 1 or a.size == 0 or not a.flags.c_contiguous:
        return False
    row_bytes = a.itemsize * (a.size // a.shape[0])
    offset = _addr(a) % CACHE_LINE
    return offset != 0 and lines_per_row(row_bytes, offset) > lines_per_row(row_bytes, 0)


class Frame:
    """Buffers for native calls: the frame of arguments (abi.VALUE_AND_GRAD), parameters,
    output, scratch space and error record, allocated once and reused by one call at a
    time (runtime/callpaths.py hands them out). No later batch to prefetch: the frame's
    ahead_rows stay 0."""

    def __init__(self, model):
        n = model.n_params
        self.frame = VALUE_AND_GRAD.new()
        self.theta = np.zeros(max(n, 1), dtype=model.dtype)
        self.value = np.zeros(1, dtype=model.dtype)
        self.grad = np.zeros(n, dtype=model.dtype)
        self.work_size = model.work_size
        self.work = aligned_zeros(self.work_size, model.dtype)
        self.err = ERROR.new()
        self.theta_address = _addr(self.theta)
        self.grad_address = _addr(self.grad) if n else _addr(self.value)
        frame = self.frame
        frame.value = _addr(self.value)
        frame.work = _addr(self.work)
        frame.err = ctypes.addressof(self.err)
        frame.grad = self.grad_in_frame = self.grad_address
        # the row-sparse parameters' touched rows (runtime/sparse.py), sized for the
        # batch in use(); the dense gradient written too unless a caller turns it off
        self.rows = RowRecords(model)
        frame.sparse = self.rows.address
        self.address = ctypes.addressof(frame)
        # views with each parameter's shape: Model._pack copies into theta_views,
        # value_and_grad copies each of grad_views out
        self.theta_views = model._param_views(self.theta)
        self.grad_views = [(name, view) for name, _, view, _, _ in model._param_views(self.grad)]
        self.bound = None
        self.keep = None
        self.theta_in_frame = None
        # the batch use_own_buffers last set the frame up for, until another setter
        # changes it: a repeated call finds the frame ready by one comparison
        self.own_batch = None
        self.use_theta()
        self.use(model._no_inputs)

    # Each setter writes the frame only when something changed: a write into the frame
    # costs a fair share of the native call of a small model.

    def use_theta(self, flat: Optional[np.ndarray] = None) -> None:
        # (the address is taken every time: the same array object can get a new buffer,
        # with ndarray.resize(refcheck=False))
        self.keep = flat          # the array must outlive the call
        self.own_batch = None
        address = self.theta_address if flat is None else _addr(flat)
        if address != self.theta_in_frame:         # (use_address, without a call)
            self.frame.params = self.theta_in_frame = address

    def use_address(self, address: int) -> None:
        self.own_batch = None
        if address != self.theta_in_frame:
            self.frame.params = self.theta_in_frame = address

    def use_grad(self, address: Optional[int] = None) -> None:
        """The gradient into memory at `address` (a caller's grad_out), or by default
        into this frame's own buffer."""
        self.own_batch = None
        address = self.grad_address if address is None else address
        if address != self.grad_in_frame:
            self.frame.grad = self.grad_in_frame = address

    def use_own_buffers(self, bound: "BoundArgs") -> None:
        """The parameters packed into this frame's vector, the gradient into its own
        buffer, and `bound` the batch (use_theta(), use_grad(), use(bound) in one);
        `own_batch` is `bound` until another setter is called."""
        self.keep = None
        if self.theta_in_frame != self.theta_address:
            self.frame.params = self.theta_in_frame = self.theta_address
        if self.grad_in_frame != self.grad_address:
            self.frame.grad = self.grad_in_frame = self.grad_address
        if bound is not self.bound:
            self.use(bound)
        self.own_batch = bound

    def use(self, bound: "BoundArgs") -> None:
        self.own_batch = None
        if bound is self.bound:
            return
        self.bound = bound
        if self.rows:
            self.rows.fit(bound.B)
        _set_batch(self.frame, bound)


def _set_batch(frame, bound: "BoundArgs") -> None:
    """A native frame's batch slots (hypers, inputs, B)."""
    frame.hypers = bound.hypers_address
    frame.inputs = bound.pointers_address
    frame.B = bound.B


class BoundArgs:
    """Validated inputs and hyperparameters, ready for native calls."""

    def __init__(self, model, arrays: list, B: int, hypers: np.ndarray):
        self.arrays = arrays          # kept alive while the pointers are in use
        self.B = B
        self.hypers = hypers
        self.pointers = np.array([_addr(a) for a in arrays] or [0], dtype=np.int64)
        self.pointers_address = _addr(self.pointers)
        self.hypers_address = _addr(hypers)
        self.model = model
        self.start = 0                # first sample, when this is a chunk of a batch
        self._chunks = {}

    def chunks(self, n: int) -> list:
        """n contiguous chunks of the batch (row slices of C-contiguous arrays are
        C-contiguous: no copies), made once per thread count."""
        if n not in self._chunks:
            edges = [self.B * k // n for k in range(n + 1)]
            out = []
            for lo, hi in zip(edges, edges[1:]):
                c = BoundArgs(self.model, [a[lo:hi] for a in self.arrays], hi - lo, self.hypers)
                c.start = self.start + lo
                out.append(c)
            self._chunks[n] = out
        return self._chunks[n]


def copy_of(record):
    """A copy of a frame or record (a ctypes Structure of codegen/abi.py)."""
    return type(record).from_buffer_copy(record)


class IndexOutOfRange(ValueError):
    """An index out of its range at a sample of a batch (index_error)."""

    def __init__(self, what: str, sample: int, where: str):
        super().__init__(f"{what} at sample {sample} ({where})")
        self.what, self.sample, self.where = what, sample, where

    def in_chunk(self, chunk: str) -> str:
        """The message for a batch that is one chunk of the data, named `chunk`."""
        return f"{chunk}: {self.what} at row {self.sample} of the chunk ({self.where})"


def index_error(model, err, bound: BoundArgs) -> IndexOutOfRange:
    """The error of a native call that returned INDEX_ERROR, from its error record
    (abi.ERROR): the check, as -1 - check where the arithmetic computing the index
    overflowed, the sample counted in `bound` (which may be a chunk of a larger batch),
    the index's value."""
    check, sample, value = err.check, err.sample, err.value
    overflow = check < 0
    check = -1 - check if overflow else check
    sample_in_chunk, sample = sample, sample + bound.start
    info = model.meta["index_checks"][check]
    ints = ", ".join(f"{s.name} = {a[sample_in_chunk].tolist()}"
                     for s, a in zip(model.inputs, bound.arrays) if s.is_int and len(a))
    what = (f"index {info['text']} overflows a 64-bit integer, so it" if overflow else
            f"index {info['text']} = {value}")
    return IndexOutOfRange(f"{what} is out of range 0..{info['size'] - 1}", sample,
                           f"line {info['line']}, col {info['col']}"
                           f"{'; ' + ints if ints else ''}")
