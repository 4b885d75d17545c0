"""A training run's data, made ready: checked, converted, split, aligned and bound.

    with prepare(model, data, config) as prepared:
        prepared.plan          # the run's sizes (config.Plan)
        prepared.full          # the training set, bound (model.bind)
        prepared.val           # the validation split, bound, or None

In order: the data (a dict of arrays, a pandas DataFrame or a file) is checked against
the model's inputs and converted once to what the native code reads (each epoch's
batches are then rows of it, copied nowhere else); the validation split is drawn from
the seed, or the validation set given (config.val_data) is read and converted the same
way; the run is planned; for a run of ALIGN_MIN_EPOCHS epochs or more, inputs whose rows straddle cache
lines are copied to memory that starts on a line; the real inputs are checked for NaN
and infinity (on the copy, if one was made: reading it brings it into cache); the
arrays are bound. Leaving the `with` gives the copies' scratch memory back.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lossc.optim.config import SPLIT_STREAM, Plan, TrainConfig, split_sizes, stream_rng
from lossc.optim.data import (check_arrays, check_finite, frame_arrays, is_data_frame,
                              load_data)
from lossc.runtime import scratch

ALIGN_MAX_BYTES = 256 << 20   # training data up to this size is copied to aligned rows
ALIGN_MIN_EPOCHS = 8          # ... for runs of at least this many epochs


@dataclass
class PreparedData:
    plan: Plan
    full: object                  # BoundArgs of the training set (empty without inputs)
    val: Optional[object]         # BoundArgs of the validation split, or None
    taken: list = field(default_factory=list)   # scratch buffers holding copies

    def release(self) -> None:
        """Give the copies' scratch memory back (nothing reads them after the run: its
        result holds parameters), and chunked data's hold on a cluster's workers."""
        while self.taken:
            scratch.give(self.taken.pop())
        for data in (self.full, self.val):
            if getattr(data, "chunked", False):
                data.close()

    def __enter__(self) -> "PreparedData":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def prepare(model, data, config: TrainConfig) -> PreparedData:
    """The run's data for `model` under `config` (see the module docstring)."""
    if is_chunked(data):
        return prepare_chunked(model, data, config)
    train, val, unchecked = split(model, data, config.validation, config.seed)
    if config.val_data is not None and not model.inputs:
        raise ValueError("a model without inputs has no data to validate on; leave out "
                         "val_data")
    val_chunks = None       # a chunked validation set (ChunkedData), beside data in memory
    if config.val_data is not None and is_chunked(config.val_data):
        from lossc.optim.chunked import ChunkedData
        val_chunks = ChunkedData(model, as_chunks(model, config.val_data, "val_data"),
                                 config.hypers, "val_data")
    taken = []
    try:
        if val_chunks is not None:
            plan = config.plan(model, n_samples(train), val_chunks.B)
        elif config.val_data is not None:
            val = validation_set(model, config.val_data)
            plan = config.plan(model, n_samples(train), n_samples(val))
        else:
            plan = config.plan(model, n_samples(train) + n_samples(val, 0))
        if train and plan.epochs >= ALIGN_MIN_EPOCHS:
            train = line_aligned(train, taken)
        if unchecked:
            check_finite(train, model, "data")
        full = model.bind(train or {}, config.hypers)
        bound_val = (val_chunks if val_chunks is not None else
                     model.bind(val, config.hypers) if val is not None else None)
    except BaseException:
        for buf in taken:
            scratch.give(buf)
        if val_chunks is not None:
            val_chunks.close()
        raise
    return PreparedData(plan, full, bound_val, taken)


def n_samples(data, none: int = 1) -> int:
    """Rows of a dict of arrays; `none` for no data."""
    return len(next(iter(data.values()))) if data else none


def split(model, data, validation, seed):
    """(train, validation, unchecked): dicts of arrays in the model's dtypes (or None,
    None), and whether the training arrays are still to be checked for NaN and infinity
    (data.check_finite: after the copy to aligned rows, which reads them anyway)."""
    if not model.inputs:
        if data:
            raise ValueError("the model has no inputs, so it takes no data; train it by "
                             "steps (steps=...)")
        if validation:
            raise ValueError("a model without inputs has no data to hold out for "
                             "validation")
        return None, None, False
    if data is None:
        raise ValueError("the model has inputs " + ", ".join(i.name for i in model.inputs)
                         + ": pass data= (a dict of arrays, a DataFrame or a data file)")
    data, unchecked = model_arrays(model, data, "data")
    if not validation:
        return data, None, unchecked
    if unchecked:           # (the rows named as they were passed, before the split)
        check_finite(data, model, "data")
    n = n_samples(data)
    _, n_val = split_sizes(n, validation)
    perm = stream_rng(seed, SPLIT_STREAM).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return ({k: a[train_idx] for k, a in data.items()},
            {k: a[val_idx] for k, a in data.items()}, False)


def model_arrays(model, data, where: str) -> tuple[dict, bool]:
    """(arrays, unchecked): `data` (a dict of arrays, a pandas DataFrame or a file
    path) checked against the model's inputs and converted to its dtypes, and whether
    the real arrays are still to be checked for NaN and infinity."""
    if isinstance(data, (str, pathlib.Path)):
        data = load_data(data, model)         # checked, naming the file's rows
        unchecked = False
    elif isinstance(data, dict):
        data = check_arrays(data, model, where, finite=False)
        unchecked = True
    elif is_data_frame(data):
        data = frame_arrays(data, model, where)
        unchecked = False
    else:
        raise TypeError(f"{where} must be a dict of arrays, a pandas DataFrame or a file "
                        f"path, got {type(data).__name__}")
    # a float64 value beyond float32's range becomes infinite in a float32 model's data:
    # arrays not checked yet are checked before the conversion (the value is reported
    # as beyond the range, as a file's is), the others after it
    narrowing = any(data[s.name].dtype.itemsize > model.dtype.itemsize
                    for s in model.inputs if not s.is_int)
    if unchecked and narrowing:
        check_finite(data, model, where)
        unchecked = False
    unchecked = unchecked or narrowing
    # Converted once, so that each epoch's shuffled copy is already what the native
    # code reads and binding a batch copies nothing.
    with np.errstate(over="ignore"):
        data = {s.name: np.ascontiguousarray(data[s.name],
                                             dtype=np.int64 if s.is_int else model.dtype)
                for s in model.inputs}
    return data, unchecked


def validation_set(model, val_data) -> dict:
    """The validation set given as val_data (for a model with inputs), checked and
    converted as the training data is."""
    val, unchecked = model_arrays(model, val_data, "val_data")
    if unchecked:
        check_finite(val, model, "val_data")
    return val


def line_aligned(data: dict, taken: list) -> dict:
    """The training data with each input whose rows straddle cache lines copied to
    memory that starts on a line (see calls.misaligned_rows). Each epoch reads every
    row, in shuffled order for mini-batches: a row that starts inside a line touches one
    line more than it needs to and splits every vector load that reads it. Arrays from
    NumPy start 16 bytes into a line as often as not. Up to ALIGN_MAX_BYTES in all:
    above that, the copy's memory would matter more than its time (an aligned array is
    used as it is). Only for runs of ALIGN_MIN_EPOCHS epochs or more: the copy costs
    several epochs' gain, more in memory the process has not touched before than in
    memory it has (docs/training.md has the figures). The copies go into scratch memory
    (runtime/scratch.py), which the next run reuses instead of faulting in new pages;
    the buffers are appended to `taken`, for the caller to give back."""
    from lossc.runtime.calls import aligned_copy, misaligned_rows
    fix = [k for k, a in data.items() if misaligned_rows(a)]
    if not fix or sum(data[k].nbytes for k in fix) > ALIGN_MAX_BYTES:
        return data

    def allocate(nbytes, dtype):
        taken.append(scratch.take(nbytes))
        return taken[-1][:nbytes]
    return {k: aligned_copy(a, allocate=allocate) if k in fix else a
            for k, a in data.items()}


def is_chunked(data) -> bool:
    """Data held as chunks (lossc.optim.chunked): a Chunks, a Dask collection (or a
    dict holding dask arrays), or a folder or glob of chunk files."""
    from lossc.optim.chunk_files import is_chunk_path
    from lossc.optim.chunked import Chunks
    from lossc.optim.dask_chunks import is_dask_data
    return isinstance(data, Chunks) or is_dask_data(data) or is_chunk_path(data)


def as_chunks(model, data, where: str):
    """The Chunks of chunked data (is_chunked)."""
    from lossc.optim.chunk_files import file_chunks, is_chunk_path
    from lossc.optim.chunked import Chunks
    from lossc.optim.dask_chunks import dask_chunks
    if isinstance(data, Chunks):
        return data
    if is_chunk_path(data):
        return file_chunks(data, model, where)
    return dask_chunks(data, model, where)


def prepare_chunked(model, data, config: TrainConfig) -> PreparedData:
    """The run's data when the training set is chunked: bound as ChunkedData, which
    the objectives and the steps evaluate chunk by chunk (lossc.optim.chunked). The
    validation set (val_data) may be chunked too, or in memory; validation= holds out
    whole chunks (chunked.held_out)."""
    from lossc.optim.chunked import ChunkedData, held_out
    if not model.inputs:
        raise ValueError("the model has no inputs, so it takes no data; train it by "
                         "steps (steps=...)")
    chunks = as_chunks(model, data, "data")
    val_chunks = None
    if config.validation:
        chunks, val_chunks = held_out(chunks, config.validation, config.seed)
    full = ChunkedData(model, chunks, config.hypers)
    val = None
    try:
        if val_chunks is not None:
            val = ChunkedData(model, val_chunks, config.hypers)
        elif config.val_data is not None and is_chunked(config.val_data):
            val = ChunkedData(model, as_chunks(model, config.val_data, "val_data"),
                              config.hypers, "val_data")
        elif config.val_data is not None:
            val = model.bind(validation_set(model, config.val_data), config.hypers)
        plan = config.plan(model, full.B, None if val is None else val.B,
                           chunk_sizes=full.sizes)
    except BaseException:
        full.close()
        raise
    return PreparedData(plan, full, val)
