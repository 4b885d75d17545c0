"""A process forked from one that has used lossc (threads, locks) works in the child.

Each case runs in a subprocess: the old failure was a child that hung forever. The
script's parent waits for its child with a deadline and kills it when it passes, so a
hang fails the test without leaving a process behind; the subprocess has a generous
timeout of its own as a second guard."""
import os
import subprocess
import sys
import textwrap

from conftest import ROOT

PRELUDE = textwrap.dedent("""
    import os, sys, threading, time
    import numpy as np
    import lossc
    from lossc.runtime.callpaths import PARALLEL_MIN_SAMPLES

    m = lossc.compile("dim D = 4\\ninput x[D]\\ninput y\\nparam w[D] = 0.5\\n"
                      "loss = (dot(w, x) - y) ^ 2\\n", cache=False)
    m.set_threads(2)
    B = 2 * PARALLEL_MIN_SAMPLES + 3
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(B, 4)), rng.normal(size=B)
    theta = m.init_params()
    want = m.value_and_grad(theta, x=X, y=Y)       # threaded: the pool now exists

    def same(got):
        return got[0] == want[0] and np.array_equal(got[1]["w"], want[1]["w"])

    def wait_for(pid, seconds=45):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "hung"
""")


def _run(body: str, prelude: str = PRELUDE, env=None) -> None:
    script = prelude + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, timeout=240, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout, r.stderr)


CHILD_CALLS = """
    pid = os.fork()
    if pid == 0:
        ok = all(same(m.value_and_grad(theta, x=X, y=Y)) for _ in range(2))
        os._exit(0 if ok else 3)
    status = wait_for(pid)
    assert status == 0, status
    assert same(m.value_and_grad(theta, x=X, y=Y))      # the parent's pool still works
    print("ok")
"""


def test_a_forked_child_runs_threaded_calls_of_its_own():
    _run(CHILD_CALLS)


def test_a_forked_child_after_a_call_on_the_default_threads():
    """The threads a model uses without set_threads (here OMP_NUM_THREADS's two) are
    the process's too: the child makes its own."""
    prelude = PRELUDE.replace("m.set_threads(2)\n", "assert m.threads == 2\n")
    assert prelude != PRELUDE
    _run(CHILD_CALLS, prelude, env=dict(os.environ, OMP_NUM_THREADS="2"))


def test_a_fork_based_multiprocessing_pool_runs_threaded_calls():
    _run("""
        import multiprocessing

        def work(k):
            return same(m.value_and_grad(theta, x=X, y=Y)) and k

        pool = multiprocessing.get_context("fork").Pool(2)
        try:
            got = pool.map_async(work, range(4)).get(timeout=45)
        except multiprocessing.TimeoutError:
            pool.terminate()
            print("hung")
            sys.exit(1)
        pool.close()
        pool.join()
        assert got == [0, 1, 2, 3], got
        print("ok")
    """)


def test_locks_held_by_another_thread_at_the_fork_are_free_in_the_child():
    _run("""
        from lossc.optim import shuffle
        from lossc.runtime import library, scratch
        locks = [m.code._lock, library._lock, scratch._lock, shuffle._native_lock]
        held, release = threading.Event(), threading.Event()

        def hold():
            for lock in locks:
                lock.__enter__()
            held.set()
            release.wait()
            for lock in reversed(locks):
                lock.__exit__(None, None, None)

        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            # the objective's code unit is compiled on its first use, under the lock
            value = m.loss(theta, x=X[:10], y=Y[:10])
            for lock in locks:
                with lock:
                    pass
            buf = scratch.take(1000)
            scratch.give(buf)
            os._exit(0 if np.isfinite(value) else 3)
        status = wait_for(pid)
        release.set()
        t.join()
        print("child:", status)
        assert status == 0, status
        print("ok")
    """)
