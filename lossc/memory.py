"""How much memory a model's arrays need, checked before they are allocated.

A `dim N = 1000000000` makes a parameter of 8 GB; a training run holds about
PARAM_COPIES arrays of the parameters' size at once. Rather than fail inside NumPy (or
have the system kill the process) once the run has started, the command line refuses
such a model up front with the bytes it would need and the dims that make it so.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

# the arrays of the parameters' size a command holds at once, rounded up: in training
# the parameters, their gradient, an optimizer's state (up to three), the best and the
# initial values, the call frame's buffers and the dicts handed out
PARAM_COPIES = 16
# a batch of inputs is held as made and as the model's dtype
INPUT_COPIES = 2
# the scratch space for a model's tensor values (its work size), one per call frame:
# the checked call's and the fused training steps'
WORK_COPIES = 2


class MemoryLimitError(ValueError):
    """Arrays that would need more memory than this machine has."""


def machine_memory() -> Optional[int]:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n:,} bytes"


def check_model_fits(model, batch_rows: int = 0) -> None:
    """Raise MemoryLimitError if PARAM_COPIES copies of the model's parameters,
    `batch_rows` samples of its inputs and WORK_COPIES of its scratch space would need
    more than the machine's memory, naming the dims that size the largest array (or
    the scratch space, where the model's intermediate values take the most)."""
    limit = machine_memory()
    item = model.dtype.itemsize
    arrays = [(p.name, p.shape, p.size * item) for p in model.params]
    arrays += [(s.name, s.shape, batch_rows * s.size * (8 if s.is_int else item))
               for s in model.inputs]            # (int inputs are held as int64)
    params = model.n_params * item
    inputs = sum(a[2] for a in arrays[len(model.params):])
    work = model.work_size * item
    need = PARAM_COPIES * params + INPUT_COPIES * inputs + WORK_COPIES * work
    if limit is None or need <= limit:
        return
    if WORK_COPIES * work > PARAM_COPIES * params + INPUT_COPIES * inputs:
        dims = ", ".join(f"dim {d} = {v}" for d, v in model.signature.dims.items())
        raise MemoryLimitError(
            f"the model's intermediate values are too large{f' ({dims})' if dims else ''}: "
            f"the command needs {gigabytes(need)} (scratch space {gigabytes(work)}, held "
            f"{WORK_COPIES} times), more than this machine's memory ({gigabytes(limit)})")
    k = max(range(len(arrays)), key=lambda j: arrays[j][2])
    name, shape, _ = arrays[k]
    dims = [f"dim {d} = {v}" for d, v in model.signature.dims.items() if v in shape]
    what = f"{name}{list(shape)}" + (f" ({', '.join(dims)})" if dims else "")
    if k >= len(model.params):
        what += f" in a batch of {batch_rows:,} samples"
    sizes = f"parameters {gigabytes(params)}, held {PARAM_COPIES} times"
    if inputs:
        sizes += f"; inputs {gigabytes(inputs)}, held {INPUT_COPIES} times"
    raise MemoryLimitError(
        f"{what} is too large: the command needs {gigabytes(need)} ({sizes}), more "
        f"than this machine's memory ({gigabytes(limit)})")


def check_array_fits(shape: tuple, dtype: np.dtype, what: str) -> int:
    """The bytes an array of `shape` and `dtype` takes; MemoryLimitError if that is
    more than the machine's memory."""
    n = int(np.prod(shape, dtype=object)) * dtype.itemsize
    limit = machine_memory()
    if limit is not None and n > limit:
        raise MemoryLimitError(f"{what} of shape {tuple(shape)} and dtype {dtype} needs "
                               f"{gigabytes(n)}, more than this machine's memory "
                               f"({gigabytes(limit)})")
    return n
