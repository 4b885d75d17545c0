"""The threads a model splits a large batch across.

Why not concurrent.futures.ThreadPoolExecutor: a KeyboardInterrupt (Ctrl-C) is raised
in the main thread between any two bytecodes, also inside the executor's own `with
lock:` blocks (submit, map's clean-up, the futures' conditions). Raised between a lock's
acquire and the block that releases it, it leaves the lock held: the next submit, a
worker finishing its future, or the executor's join at interpreter exit then wait
forever, and the process hangs at exit after printing its results.

So the workers here share no lock with the caller. Tasks and results travel through
queue.SimpleQueue, whose put and get are single C calls (the caller's blocking get is
interrupted cleanly: nothing is left held). The threads are daemons blocked on their
queue, so the interpreter exits without joining them; a worker still running native
code for an interrupted call at exit finishes it on memory its task holds.
"""
from __future__ import annotations

import queue
import threading
import weakref


def _work(tasks: "queue.SimpleQueue") -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        fn, index, arg, done, dropped = task
        if not dropped[0]:
            try:
                done.put((index, True, fn(arg)))
            except BaseException as e:          # the caller re-raises it
                done.put((index, False, e))
        del task, fn, arg, done, dropped        # (what the task held goes with it)


class Workers:
    """`count` daemon threads running tasks in the order they were given."""

    def __init__(self, count: int, name: str = "lossc"):
        self.count = count
        self._tasks: "queue.SimpleQueue" = queue.SimpleQueue()
        started = 0
        try:
            for i in range(count):
                threading.Thread(target=_work, args=(self._tasks,), name=f"{name}-{i}",
                                 daemon=True).start()
                started += 1
        except RuntimeError as e:
            # (the system's limit on threads: without this the threads started so far
            # would wait on their queue until the process ends, holding their stacks)
            _stop(self._tasks, started)
            raise RuntimeError(f"cannot start {count} threads ({started} started: {e}); "
                               "give the model fewer (Model.set_threads)") from None
        # the threads end when the pool is dropped (a model freed, a new thread count)
        weakref.finalize(self, _stop, self._tasks, count)

    def map(self, fn, args: list) -> list:
        """[fn(a) for a in args], on the workers; an exception of fn re-raised. If the
        wait is interrupted, the tasks not yet started are dropped and those running
        run to their end: fn and args must hold whatever the tasks read."""
        done: "queue.SimpleQueue" = queue.SimpleQueue()
        dropped = [False]               # (a flag the workers read without a lock)
        for i, a in enumerate(args):
            self._tasks.put((fn, i, a, done, dropped))
        results = [None] * len(args)
        try:
            for _ in args:
                i, ok, r = done.get()
                if not ok:
                    try:
                        raise r
                    finally:
                        del r           # (no cycle through this frame: self lives on)
                results[i] = r
        except BaseException:
            dropped[0] = True
            raise
        return results


def _stop(tasks: "queue.SimpleQueue", count: int) -> None:
    for _ in range(count):
        tasks.put(None)
