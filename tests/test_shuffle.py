"""The native epoch shuffle (lossc/optim/shuffle.py, lossc/codegen/rng.py) against
NumPy's own Generator.permutation, the reference: the same permutations and the same
generator state afterwards, for one call, for sequences of calls, and mixed with other
NumPy draws; the fallback for other bit generators, and the guard that falls back when
the native code disagrees with NumPy."""
import ctypes
import types

import numpy as np
import pytest

from lossc.codegen.abi import PCG64_BUFFER, PERMUTATION
from lossc.codegen.rng import FUNCTION
from lossc.optim import shuffle
from lossc.optim.shuffle import permutation

SEEDS = range(8)
SIZES = [0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 1000, 2047, 2048, 2049, 16384, 100003]


def twins(seed):
    """Two generators in the same state: one for lossc, one for NumPy."""
    return np.random.default_rng(seed), np.random.default_rng(seed)


def native(rng, n):
    """One permutation drawn by the native function itself, whatever n (permutation()
    leaves small n to NumPy), updating rng's state as permutation() does."""
    fn = shuffle._native().functions[FUNCTION]
    out, rng.bit_generator.state = shuffle._draw(fn, rng.bit_generator.state, n)
    return out


def same_state(a, b) -> bool:
    """Bit generator states (dicts, which hold arrays for some generators) equal."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return type(a) is type(b) and a == b


def assert_same(got, expected, ours, reference):
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert same_state(ours.bit_generator.state, reference.bit_generator.state)


@pytest.fixture
def native_calls(monkeypatch):
    """Counts the native draws, so that a test cannot pass by falling back to NumPy.
    The first-use check against NumPy is made before counting starts."""
    shuffle._trusted(np.random.PCG64(0), shuffle._native().functions[FUNCTION])
    calls = []
    draw = shuffle._draw

    def counted(fn, state, n):
        calls.append(n)
        return draw(fn, state, n)

    monkeypatch.setattr(shuffle, "_draw", counted)
    return calls


@pytest.fixture
def unchecked(monkeypatch):
    """As in a new process: the native code not yet checked against NumPy."""
    monkeypatch.setattr(shuffle, "_agrees", None)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_permutation_matches_numpy(seed, n, native_calls):
    ours, reference = twins(seed)
    assert_same(permutation(ours, n), reference.permutation(n), ours, reference)
    assert native_calls == ([n] if n >= shuffle.SMALL else [])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_native_function_matches_numpy(seed, n):
    """The native function for every n, small ones included, with and without a
    buffered 32-bit half on entry."""
    for buffered in (False, True):
        ours, reference = twins(seed)
        if buffered:
            for g in (ours, reference):
                g.integers(0, 10, dtype=np.uint32)
            assert ours.bit_generator.state["has_uint32"] == 1
        assert_same(native(ours, n), reference.permutation(n), ours, reference)


def test_native_every_size_in_a_row():
    """n = 0..299 drawn one after another from one generator: the draws end at every
    position of a chunk of the stream, with the buffer full and empty."""
    ours, reference = twins(12345)
    seen = set()
    for n in range(300):
        assert_same(native(ours, n), reference.permutation(n), ours, reference)
        seen.add(ours.bit_generator.state["has_uint32"])
    assert seen == {0, 1}


def test_sequence_of_permutations(native_calls):
    ours, reference = twins(7)
    sizes = [16384] * 5 + [100, 3001, 64, 2048, 2049, 100003, 5000, 7]
    for n in sizes:
        assert_same(permutation(ours, n), reference.permutation(n), ours, reference)
    assert native_calls == [n for n in sizes if n >= shuffle.SMALL]


@pytest.mark.parametrize("buffered", [False, True])
def test_shuffler_draws_numpys_sequence_and_gives_the_state_back(buffered):
    """Shuffler keeps the state in native arrays between draws: the same permutations
    as NumPy's, one after another, small sizes (NumPy's own draws) in between, and the
    generator's state after close() as NumPy leaves it."""
    ours, reference = twins(21)
    if buffered:
        for g in (ours, reference):
            g.integers(0, 10, dtype=np.uint32)
    sh = shuffle.Shuffler(ours)
    sizes = [16384] * 4 + [100, 3001, 3001, 7, 2048, 2049, 100003, 5000, 5000]
    for n in sizes:
        np.testing.assert_array_equal(sh.permutation(n), reference.permutation(n))
    assert sh.words is not None        # the last draws were native
    sh.close()
    assert sh.words is None
    assert same_state(ours.bit_generator.state, reference.bit_generator.state)
    sh.close()                         # twice: nothing more happens
    assert same_state(ours.bit_generator.state, reference.bit_generator.state)


def test_a_reusing_shuffler_draws_into_one_array(native_calls):
    """reuse=True: NumPy's sequence still, each native draw in the same array (a new
    one when n changes)."""
    ours, reference = twins(21)
    sh = shuffle.Shuffler(ours, reuse=True)
    outs = []
    for n in (4096, 4096, 4096, 5000, 5000):
        out = sh.permutation(n)
        np.testing.assert_array_equal(out, reference.permutation(n))
        outs.append(out)
    sh.close()
    assert same_state(ours.bit_generator.state, reference.bit_generator.state)
    assert outs[0] is outs[1] is outs[2] and outs[3] is outs[4] and outs[3] is not outs[0]


def test_shuffler_leaves_other_generators_to_numpy():
    ours = np.random.Generator(np.random.Philox(3))
    reference = np.random.Generator(np.random.Philox(3))
    sh = shuffle.Shuffler(ours)
    for n in (4000, 4000):
        np.testing.assert_array_equal(sh.permutation(n), reference.permutation(n))
    assert sh.words is None
    sh.close()
    assert same_state(ours.bit_generator.state, reference.bit_generator.state)


def test_mixed_with_numpy_draws(native_calls):
    """Native permutations between NumPy's other draws leave every draw as NumPy alone
    would make it."""
    ours, reference = twins(2024)
    steps = [
        lambda g: g.random(),
        lambda g: g.integers(0, 10, dtype=np.uint32),      # leaves a half buffered
        lambda g: g.random(3),
        lambda g: g.permutation(777),                        # NumPy's own permutation
        lambda g: g.integers(0, 1000, size=5),
        lambda g: g.normal(size=4),
        lambda g: g.random(dtype=np.float32),
    ]
    for k, step in enumerate(steps):
        assert_same(permutation(ours, 3000 + k), reference.permutation(3000 + k),
                    ours, reference)
        np.testing.assert_array_equal(step(ours), step(reference))
        assert ours.bit_generator.state == reference.bit_generator.state
    assert_same(permutation(ours, 16384), reference.permutation(16384), ours, reference)
    assert len(native_calls) == len(steps) + 1


@pytest.mark.parametrize("seed", SEEDS)
def test_buffered_half_on_entry(seed, native_calls):
    """has_uint32 set before the call (rng.integers with dtype uint32 draws 32 bits and
    buffers the other half): the buffered half is the first value used."""
    ours, reference = twins(seed)
    for g in (ours, reference):
        g.integers(0, 10, dtype=np.uint32)
    assert ours.bit_generator.state["has_uint32"] == 1
    for n in (2048, 2049, 16384, 16385):
        assert_same(permutation(ours, n), reference.permutation(n), ours, reference)
    assert len(native_calls) == 4


def test_both_buffer_states_after_a_call():
    """Over seeds, a permutation leaves a half buffered sometimes and sometimes not, and
    both agree with NumPy (the tests above check the state; this checks that both
    cases happen)."""
    after = set()
    for seed in range(20):
        ours, reference = twins(seed)
        assert_same(permutation(ours, 5000), reference.permutation(5000), ours, reference)
        after.add(ours.bit_generator.state["has_uint32"])
    assert after == {0, 1}


def test_state_conversion_round_trip():
    """128-bit state and increment with the top bits set survive the u64 records."""
    state = np.random.default_rng(3).bit_generator.state
    state["state"]["state"] = (1 << 128) - 3
    state["state"]["inc"] = (1 << 127) | (1 << 63) | 1
    state["has_uint32"], state["uinteger"] = 1, 0xFFFFFFFF
    words, buffered = shuffle.state_records(state)
    assert [words.state_lo, words.state_hi, words.inc_lo, words.inc_hi] == [
        (1 << 64) - 3, (1 << 64) - 1, (1 << 63) | 1, 1 << 63]
    assert shuffle.state_dict(words, buffered) == state


def test_high_state_bits(native_calls):
    """A generator state whose words do not fit int64."""
    ours, reference = twins(0)
    state = ours.bit_generator.state
    state["state"]["state"] = (1 << 128) - 12345
    state["state"]["inc"] = (1 << 128) - 1        # odd, as PCG needs
    for g in (ours, reference):
        g.bit_generator.state = state
    assert_same(permutation(ours, 4000), reference.permutation(4000), ours, reference)
    assert native_calls == [4000]


def test_integer_types_and_negative_n(native_calls):
    ours, reference = twins(5)
    assert_same(permutation(ours, np.int64(5000)), reference.permutation(np.int64(5000)),
                ours, reference)
    assert_same(permutation(ours, np.int32(3000)), reference.permutation(3000),
                ours, reference)
    assert_same(permutation(ours, -1), reference.permutation(-1), ours, reference)
    assert_same(permutation(ours, 0), reference.permutation(0), ours, reference)
    assert native_calls == [5000, 3000]


@pytest.mark.parametrize("bit_generator", [np.random.MT19937, np.random.Philox,
                                           np.random.SFC64, np.random.PCG64DXSM])
def test_other_bit_generators_fall_back(bit_generator, native_calls):
    ours = np.random.Generator(bit_generator(0))
    reference = np.random.Generator(bit_generator(0))
    for n in (3000, 16384):
        assert_same(permutation(ours, n), reference.permutation(n), ours, reference)
    assert native_calls == []


def test_subclass_of_pcg64_falls_back(native_calls):
    class Mine(np.random.PCG64):
        pass

    ours, reference = np.random.Generator(Mine(1)), np.random.Generator(Mine(1))
    assert_same(permutation(ours, 3000), reference.permutation(3000), ours, reference)
    assert native_calls == []


def _broken(change):
    """A stand-in for _native() whose function draws natively and then `change`s the
    output (n, i64 array) or the state arrays: what a NumPy that changed its algorithm
    would look like."""
    real = shuffle._native().functions[FUNCTION]

    def fn(frame_address):
        rc = real(frame_address)
        frame = PERMUTATION.struct.from_address(frame_address)
        out = np.ctypeslib.as_array((ctypes.c_int64 * frame.n).from_address(frame.out))
        change(out, PCG64_BUFFER.struct.from_address(frame.buffered))
        return rc

    return lambda: types.SimpleNamespace(functions={FUNCTION: fn})


def _swap_two(out, buffered):
    out[[0, 1]] = out[[1, 0]]


def _flip_buffer(out, buffered):
    buffered.has_uint32 ^= 1


@pytest.mark.parametrize("change", [_swap_two, _flip_buffer])
def test_guard_falls_back_when_native_disagrees(change, monkeypatch, unchecked):
    monkeypatch.setattr(shuffle, "_native", _broken(change))
    for seed in SEEDS:
        ours, reference = twins(seed)
        for n in (3000, 16384):
            assert_same(permutation(ours, n), reference.permutation(n), ours, reference)
    assert shuffle._agrees is False


def test_guard_accepts_the_real_code(unchecked):
    ours, reference = twins(99)
    assert_same(permutation(ours, 3000), reference.permutation(3000), ours, reference)
    assert shuffle._agrees is True


def test_guard_checks_on_a_copy(native_calls, monkeypatch):
    """The first-use check draws from copies: the caller's generator moves only by its
    own permutation."""
    monkeypatch.setattr(shuffle, "_agrees", None)
    ours, reference = twins(4)
    ours.integers(0, 10, dtype=np.uint32)
    reference.integers(0, 10, dtype=np.uint32)
    assert_same(permutation(ours, 2500), reference.permutation(2500), ours, reference)
    assert native_calls[-1] == 2500 and len(native_calls) > 1   # the check's draws too
    assert shuffle._agrees is True


def test_elf_loader_takes_the_object():
    """lossc's own ELF loader links the object compiled as lossc's library compiles it
    (no MCJIT fallback), and both agree with NumPy."""
    from lossc.runtime import elf
    if not elf.supported():
        pytest.skip("the ELF loader runs on Linux x86-64 only")
    from lossc.codegen.jit import NativeCode
    from lossc.runtime import library
    obj = library.compile_unit("rng.permutation", "any")
    for code in (elf.ElfCode(obj, (FUNCTION,)), NativeCode(obj, (FUNCTION,))):
        ours, reference = twins(8)
        out, ours.bit_generator.state = shuffle._draw(code.functions[FUNCTION],
                                                      ours.bit_generator.state, 10000)
        assert_same(out, reference.permutation(10000), ours, reference)


def test_a_native_function_that_cannot_be_had_falls_back_to_numpy(native_calls):
    """NumPy draws for that call; nothing process-wide changes: the next call that can
    have the native function draws natively."""
    def unavailable():
        raise RuntimeError("no LLVM here")
    ours, reference = twins(5)
    assert_same(permutation(ours, 3000, native=unavailable), reference.permutation(3000),
                ours, reference)
    assert native_calls == [] and shuffle._agrees is True
    assert_same(permutation(ours, 3000), reference.permutation(3000), ours, reference)
    assert native_calls == [3000]


def test_two_threads_loading_the_native_code_at_once(tmp_path):
    """The first use from two threads at the same moment loads the code once (a second
    copy, dropped, would unmap the code the first thread runs): in a new process, where
    nothing is loaded yet, a crash cannot take the test run with it."""
    import os
    import subprocess
    import sys
    code = (
        "import threading, numpy as np\n"
        "from lossc.optim.shuffle import permutation\n"
        "bar = threading.Barrier(2)\n"
        "out = {}\n"
        "def run(k):\n"
        "    r = np.random.default_rng(k); bar.wait(); out[k] = permutation(r, 2_000_000)\n"
        "ts = [threading.Thread(target=run, args=(k,)) for k in range(2)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "for k in range(2):\n"
        "    assert np.array_equal(out[k], np.random.default_rng(k).permutation(2_000_000))\n"
        "print('ok')\n")
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, LOSSC_CACHE_DIR=str(tmp_path)))
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
