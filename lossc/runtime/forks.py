"""What a process made by os.fork (or a fork-based multiprocessing pool) must not take
over from its parent.

fork copies the calling thread only. A thread pool's workers do not exist in the
child, so work handed to them there would wait forever; a lock that another thread
held at the moment of the fork stays held in the child, and the first `with` on it
there never returns. The lossc objects that own such things register here, and in
every child their `_after_fork_in_child()` replaces them before anything can use them
(os.register_at_fork runs it in the child, while the child has its one thread).
"""
from __future__ import annotations

import os
import threading
import weakref

_owners: "weakref.WeakSet" = weakref.WeakSet()


def renew_in_child(owner) -> None:
    """Have owner._after_fork_in_child() called in every child forked while owner lives."""
    _owners.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_owners):
        owner._after_fork_in_child()


class Lock:
    """A threading.Lock for `with` blocks that a forked child gets anew, free: the
    lossc code under these locks (compiling or loading a code unit, taking a scratch
    buffer) never forks, so only another thread can hold one at a fork."""

    def __init__(self):
        self._lock = threading.Lock()
        renew_in_child(self)

    def __enter__(self) -> "Lock":
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


if hasattr(os, "register_at_fork"):       # (every POSIX Python; fork exists nowhere else)
    os.register_at_fork(after_in_child=_after_fork_in_child)
