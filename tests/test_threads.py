"""Threads by default: a model splits large batches across the cores the process may
run on (OMP_NUM_THREADS when set), as NumPy's BLAS and PyTorch do, without set_threads;
small batches stay on the calling thread; results are the same bits on every run for a
given thread count, whether that count is the default or asked for."""
import os

import numpy as np
import pytest

import lossc
from lossc.options import Options, available_cores
from lossc.runtime import callpaths
from lossc.runtime.callpaths import PARALLEL_MIN_SAMPLES

SOURCE = ("dim D = 5\ninput x[D]\ninput y\nparam w[D] = 0.1\nparam b = 0.2\n"
          "z = dot(w, x) + b\nloss = softplus(z) - y * z + 0.01 * sum(w ^ 2)\n")
LARGE = 2 * PARALLEL_MIN_SAMPLES + 7       # split across two threads by default
SMALL = 2 * PARALLEL_MIN_SAMPLES - 1       # not worth a second thread


def _data(B: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(B, 5)), "y": (rng.random(B) < 0.5) * 1.0}


def _compile(**options) -> lossc.Model:
    return lossc.compile(SOURCE, cache=False, options=Options(**options))


def _same(a: tuple, b: tuple) -> bool:
    """The same objective and gradient, bit for bit (NaNs excepted: there are none)."""
    return (np.float64(a[0]).tobytes() == np.float64(b[0]).tobytes()
            and a[1].keys() == b[1].keys()
            and all(a[1][k].tobytes() == b[1][k].tobytes() for k in a[1]))


@pytest.mark.parametrize("value, threads", [("3", 3), ("4,2", 4), (" 2 ", 2), ("", None)])
def test_omp_num_threads_is_read_into_the_options(value, threads):
    assert Options.from_env({"HOME": "/h", "OMP_NUM_THREADS": value}).threads == threads
    assert Options.from_env({"HOME": "/h"}).threads is None


@pytest.mark.parametrize("value", ["0", "-1", "two", "2.5", ",4"])
def test_an_omp_num_threads_that_is_no_thread_count_is_refused(value):
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        Options.from_env({"HOME": "/h", "OMP_NUM_THREADS": value})


@pytest.mark.parametrize("threads", [0, -2, 1.5, "2", True, np.int64(0), np.float64(2)])
def test_options_threads_must_be_a_positive_integer(threads):
    with pytest.raises(ValueError, match="threads"):
        Options(threads=threads)


def test_options_take_numpys_integers_as_set_threads_does():
    options = Options(threads=np.int64(3), vector_bits=np.int32(256))
    assert (options.threads, options.vector_bits) == (3, 256)
    assert type(options.threads) is int and type(options.vector_bits) is int
    with pytest.raises(ValueError, match="vector_bits"):
        Options(vector_bits=np.float64(256))
    with pytest.raises(ValueError, match="vector_bits"):
        Options(vector_bits=True)


def test_a_model_starts_with_one_thread_per_core_it_may_run_on(monkeypatch):
    """The affinity, not os.cpu_count(): a process limited to three cores (taskset, a
    container) uses three; OMP_NUM_THREADS wins over it; set_threads(None) goes back
    to the default."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert available_cores() == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    m = lossc.compile(SOURCE, cache=False)
    assert m.threads == 3
    assert m.set_threads(1).threads == 1
    assert m.set_threads(None).threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert lossc.compile(SOURCE, cache=False).threads == 2
    assert _compile(threads=5).threads == 5


def _count_parallel_runs(monkeypatch) -> list:
    runs = []
    real = callpaths.CallPaths._run_parallel

    def counted(self, fn, f):
        runs.append(f.bound.B)
        return real(self, fn, f)
    monkeypatch.setattr(callpaths.CallPaths, "_run_parallel", counted)
    return runs


def test_large_batches_use_the_cores_without_set_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs = _count_parallel_runs(monkeypatch)
    m = lossc.compile(SOURCE, cache=False)
    theta, large, small = m.init_params(), _data(LARGE), _data(SMALL)
    m.value_and_grad(theta, **large)
    m.value_and_grad(theta, **large)          # (the repeated call)
    m.loss(theta, **large)
    flat, bound = m.pack_params(theta), m.bind(large)
    m.value_and_grad_flat(flat, bound)
    m.value_and_grad_flat(flat, bound)
    assert runs == [LARGE] * 5
    m.value_and_grad(theta, **small)
    m.value_and_grad(theta, **small)
    m.loss(theta, **small)
    m.value_and_grad_flat(flat, m.bind(small))
    assert runs == [LARGE] * 5                # small batches: the calling thread
    m.set_threads(1)
    m.value_and_grad(theta, **large)
    m.loss(theta, **large)
    assert runs == [LARGE] * 5                # pinned to one thread


def test_samples_with_wide_inputs_split_from_fewer_samples(monkeypatch):
    """A thread is worth its cost from PARALLEL_MIN_BYTES of input, so a model whose
    samples hold 4,096 reals splits a batch of a few hundred rows, where one of 5 reals
    a sample waits for PARALLEL_MIN_SAMPLES; the split gives the one-thread result up to
    the order of the sum."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    runs = _count_parallel_runs(monkeypatch)
    wide = lossc.compile(SOURCE.replace("dim D = 5", "dim D = 4096"), cache=False)
    per_thread = callpaths.PARALLEL_MIN_BYTES // (4097 * 8) + 1
    assert wide.min_samples_per_thread == per_thread < PARALLEL_MIN_SAMPLES
    assert _compile().min_samples_per_thread == PARALLEL_MIN_SAMPLES
    rng = np.random.default_rng(1)
    B = 2 * per_thread + 3
    data = {"x": rng.normal(size=(B, 4096)), "y": (rng.random(B) < 0.5) * 1.0}
    theta = wide.init_params()
    two = wide.value_and_grad(theta, **data)
    assert runs == [B]
    wide.value_and_grad(theta, x=data["x"][:B - 4], y=data["y"][:B - 4])
    assert runs == [B]                        # below two threads' worth: one thread
    one = wide.set_threads(1).value_and_grad(theta, **data)
    assert two[0] == pytest.approx(one[0], rel=1e-13)
    for k in one[1]:
        np.testing.assert_allclose(two[1][k], one[1][k], rtol=1e-12, atol=1e-15)


def test_small_batches_keep_the_repeated_flat_call_with_threads(monkeypatch):
    """With several threads, a repeated flat call of a small batch still skips the
    checks (only a batch that is split goes through the checked call, which combines
    the threads' parts)."""
    checked = []
    real = callpaths.CheckedCall.value_and_grad_flat

    def counted(self, *args):
        checked.append(1)
        return real(self, *args)
    monkeypatch.setattr(callpaths.CheckedCall, "value_and_grad_flat", counted)
    m = _compile(threads=2)
    flat, bound = m.pack_params(m.init_params()), m.bind(_data(SMALL))
    grad = np.empty_like(flat)
    first = m.value_and_grad_flat(flat, bound, grad_out=grad)[0]
    for _ in range(3):
        assert m.value_and_grad_flat(flat, bound, grad_out=grad)[0] == first
    assert len(checked) == 1


def test_results_are_the_same_bits_for_a_thread_count():
    """The same call twice gives the same bits; a model on its default thread count and
    one asked for that count explicitly agree bit for bit; so do keyword, flat and
    objective-only calls on either."""
    data = _data(LARGE, seed=3)
    default = _compile(threads=2)
    explicit = _compile(threads=1).set_threads(2)
    rng = np.random.default_rng(4)
    theta = {"w": rng.normal(size=5), "b": np.float64(0.3)}
    first = default.value_and_grad(theta, **data)
    assert _same(first, default.value_and_grad(theta, **data))
    assert _same(first, explicit.value_and_grad(theta, **data))
    assert default.loss(theta, **data) == explicit.loss(theta, **data)
    flat = default.pack_params(theta)
    for m in (default, explicit):
        v, g = m.value_and_grad_flat(flat, m.bind(data))
        assert _same((v, m.unpack_params(g)), first)
    one = _compile(threads=1).value_and_grad(theta, **data)
    assert one[0] == pytest.approx(first[0], rel=1e-12)      # another sum order
    for k in one[1]:
        np.testing.assert_allclose(one[1][k], first[1][k], rtol=1e-10)


def test_the_workers_give_results_in_order_and_re_raise_a_tasks_error():
    """runtime/workers.py, the pool a split batch runs on: results in the order of the
    arguments whatever order the threads finish in; a task's exception reaches the
    caller; the pool keeps working after it; dropped pools end their threads."""
    import threading
    import time
    from lossc.runtime.workers import Workers

    def slow_first(i):
        time.sleep(0.02 if i == 0 else 0)
        if i == 99:
            raise ValueError("task 99")
        return i * i

    before = threading.active_count()
    pool = Workers(3)
    assert pool.map(slow_first, list(range(8))) == [i * i for i in range(8)]
    with pytest.raises(ValueError, match="task 99"):
        pool.map(slow_first, [1, 99, 2])
    assert pool.map(slow_first, [4, 5]) == [16, 25]
    del pool
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


@pytest.mark.parametrize("n, min_samples", [(1.5, None), ("2", None), (True, None),
                                            (float("inf"), None), (0, None), (2, 0.5),
                                            (2, "8"), (2, 0)])
def test_set_threads_takes_positive_integers_only(n, min_samples):
    """As Options(threads=...) does: a float is not rounded, a string not parsed."""
    m = _compile()
    before = (m.threads, m.min_samples_per_thread)
    with pytest.raises(ValueError, match="thread"):
        m.set_threads(n, min_samples)
    assert (m.threads, m.min_samples_per_thread) == before
    assert m.set_threads(np.int64(2), np.int32(4)).threads == 2


def test_threads_the_system_will_not_start_end_with_an_error_and_leave_none_behind(
        monkeypatch):
    """set_threads(many) and a batch to split: when the system refuses a thread (its
    limit on threads), the call raises an error naming set_threads, the threads started
    for it end, and the model still works with fewer."""
    import threading
    real_start, started = threading.Thread.start, []

    def start_up_to_three(thread):
        if len(started) == 3:
            raise RuntimeError("can't start new thread")
        started.append(thread)
        real_start(thread)

    m = _compile().set_threads(50, 1)
    data = _data(200)
    monkeypatch.setattr(threading.Thread, "start", start_up_to_three)
    with pytest.raises(RuntimeError, match=r"cannot start 50 threads \(3 started.*"
                                           r"set_threads"):
        m.value_and_grad({"w": np.ones(5), "b": 0.0}, **data)
    monkeypatch.undo()
    for t in started:
        t.join(timeout=60)
        assert not t.is_alive()
    one = m.set_threads(1).value_and_grad({"w": np.ones(5), "b": 0.0}, **data)
    two = m.set_threads(2, 1).value_and_grad({"w": np.ones(5), "b": 0.0}, **data)
    assert one[0] == pytest.approx(two[0], rel=1e-12)


def test_a_new_thread_count_ends_the_threads_of_the_old_one():
    """set_threads(1) after a split call left the five threads of the old count
    waiting until the model was freed (a model pinned to one thread never splits
    again, which is when the pool was renewed)."""
    import threading
    m = _compile().set_threads(5, 1)
    theta = {"w": np.ones(5), "b": 0.0}
    before = set(threading.enumerate())
    split = m.value_and_grad(theta, **_data(200))
    workers = [t for t in threading.enumerate() if t not in before]
    assert len(workers) == 5
    one = m.set_threads(1).value_and_grad(theta, **_data(200))
    for t in workers:
        t.join(timeout=60)
        assert not t.is_alive()
    assert one[0] == pytest.approx(split[0], rel=1e-12)
    again = m.set_threads(5, 1).value_and_grad(theta, **_data(200))
    assert _same(again, split)
