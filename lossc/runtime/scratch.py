"""Scratch memory that training runs hand on to the next run.

A training run copies data into memory of its own (lossc.optim.driver._line_aligned:
the inputs on cache-line boundaries). Memory the process has not touched before costs
a page fault per 4 KB page on first write, the kernel mapping and zeroing it: some
1.2 us a page on a virtual machine, so copying 4 MB of training data takes 1.7 ms into
fresh memory against 0.3 ms into memory used before. And glibc hands large freed
blocks back to the system (above its mmap threshold, or at the top of the heap), so
the next run's copy is fresh memory again: in a loop of runs (a sweep, a benchmark)
half the runs paid the faults.

So a run takes its buffers from here and gives them back when it ends; up to
KEPT_BYTES stay with the process between runs (`clear()` lets them go). The buffers
are raw bytes with stale contents: whoever takes one overwrites what it uses. Each
buffer has one user at a time (take and give under a lock), so runs in several
threads each get their own.
"""
from __future__ import annotations

import numpy as np

from lossc.runtime import forks

KEPT_BYTES = 64 << 20     # kept between runs at most, in all
SLACK = 2                 # a kept buffer serves requests from 1/SLACK of its size

_lock = forks.Lock()      # (a forked child gets a free one)
_kept: list[np.ndarray] = []      # free uint8 buffers, the most recently given last


def take(nbytes: int) -> np.ndarray:
    """A uint8 buffer of at least nbytes (a kept one if one fits, else a new one)."""
    nbytes = int(nbytes)
    with _lock:
        fits = [k for k, buf in enumerate(_kept) if nbytes <= buf.nbytes <= SLACK * nbytes]
        if fits:
            return _kept.pop(min(fits, key=lambda k: _kept[k].nbytes))
    return np.empty(nbytes, dtype=np.uint8)


def give(buf: np.ndarray) -> None:
    """Hand back a buffer from take(); nothing may use it (or views of it) afterwards.
    Kept if it fits KEPT_BYTES, the oldest kept ones dropped to make room."""
    if buf.nbytes > KEPT_BYTES:
        return
    with _lock:
        _kept.append(buf)
        while sum(b.nbytes for b in _kept) > KEPT_BYTES:
            _kept.pop(0)


def kept_bytes() -> int:
    with _lock:
        return sum(b.nbytes for b in _kept)


def clear() -> None:
    """Let the kept buffers go."""
    with _lock:
        _kept.clear()
