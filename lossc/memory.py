"""Memory an array needs, checked before it is allocated.

A file's header may describe an array far larger than the file (or the machine) holds:
rather than fail inside NumPy (or have the system kill the process), the readers ask
check_array_fits first and refuse with the bytes the array would need.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np


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
