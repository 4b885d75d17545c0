"""`rng.permutation(n)` for training's per-epoch shuffle, in native code.

`permutation(rng, n)` returns exactly `rng.permutation(n)` and leaves `rng` in exactly
the state NumPy would, so a run's shuffles are those of NumPy and the generator can go
on to be used by NumPy afterwards (or before: native and NumPy draws mix freely). For a
`np.random.PCG64` bit generator (what `np.random.default_rng` makes) the permutation is
drawn by lossc_permutation_pcg64 (codegen/rng.py), several times as fast as NumPy
(docs/training.md has the figures); any other bit generator, a small n (or one above
2^32), or a platform whose default integer is not int64 goes to NumPy.

The generator's state crosses over as two records (codegen/abi.py PCG64_STATE and
PCG64_BUFFER): its `bit_generator.state` dict is unpacked into u64 words before the
call and packed back after it (`Shuffler`, for the training loop's draws one epoch
after another, keeps it in those records in between). PCG64's 128-bit state and
increment do not fit a signed int64, hence unsigned words and Python ints.

The native code reimplements NumPy's algorithm, which NumPy does not promise to keep.
So the first time the native path is taken in a process it is checked against NumPy on
copies of the generator; if they disagree (a NumPy release changed the algorithm), NumPy
draws every permutation from then on.
"""
from __future__ import annotations

import numpy as np

import ctypes

from lossc.codegen.abi import PCG64_BUFFER, PCG64_STATE, PERMUTATION
from lossc.codegen.rng import FUNCTION
from lossc.runtime import forks
from lossc.runtime.calls import _addr

# below this many elements NumPy is about as fast: a one-off native call has a fixed
# cost besides the shuffle (the state passes through bit_generator.state's dict twice,
# and the arrays), which the native code's cheaper elements repay from about here on
# (docs/training.md has the figures)
SMALL = 2048
LARGE = 2 ** 32   # from here on NumPy draws 64-bit values too, a path left untested
_MASK64 = (1 << 64) - 1
# the native code writes int64; rng.permutation(n) returns NumPy's default integer
_INT64_INDEX = np.arange(1).dtype == np.int64

# whether the native code draws as this process's NumPy does: a fact about NumPy,
# learned once (_trusted); None until checked
_agrees: bool | None = None


def permutation(rng: np.random.Generator, n: int, native=None) -> np.ndarray:
    """rng.permutation(n), leaving rng as rng.permutation(n) would. native: a callable
    returning lossc_permutation_pcg64 as a ctypes function (a model's copy, e.g.
    `lambda: model.code.function(PERMUTATION)`); by default lossc's own (_native).
    Where the function cannot be had, NumPy draws."""
    shuffler = Shuffler(rng, native)
    if not _native_size(n) or not shuffler.native_applies():
        return rng.permutation(n)
    bg = rng.bit_generator
    with bg.lock:                  # what Generator.shuffle holds while it draws
        out, bg.state = _draw(shuffler.fn, bg.state, int(n))
    return out


def _native_size(n) -> bool:
    return isinstance(n, (int, np.integer)) and SMALL <= n <= LARGE


class Shuffler:
    """rng.permutation(n) again and again, for a generator that nothing else uses in
    between (the training loop's own): the permutations `permutation` would draw, but
    the generator's state stays in the native code's arrays from one draw to the next
    instead of crossing over through `bit_generator.state` twice a draw (a dict of
    Python ints built and parsed each way, a cost a short training run notices).
    `close()` writes the state back into the generator; until then the generator
    itself must not be used.

    reuse=True: each native draw overwrites the array the previous one returned (for a
    caller done with a permutation by the time it draws the next: no new memory, and
    no page faults, each epoch)."""

    def __init__(self, rng: np.random.Generator, native=None, reuse: bool = False):
        self.rng, self.native = rng, native
        self.words = None       # the state, as native records, while the native code has it
        self.reuse = reuse
        self.out = None         # with reuse, the array the draws go into

    def permutation(self, n: int) -> np.ndarray:
        if not _native_size(n):
            self.close()
            return self.rng.permutation(n)
        if self.words is None:
            if not self.native_applies():
                return self.rng.permutation(n)
            self.take_state()
        return self.draw(n)

    def native_applies(self) -> bool:
        """Whether the native code draws for this generator (and self.fn is it)."""
        bg = self.rng.bit_generator
        if type(bg) is not np.random.PCG64 or not _INT64_INDEX:
            return False
        self.fn = _function(self.native)
        return self.fn is not None and _trusted(bg, self.fn)

    def take_state(self) -> None:
        """Move the generator's state into native records (after native_applies)."""
        self.words, self.buffered = state_records(self.rng.bit_generator.state)
        self.frame = _state_frame(self.words, self.buffered)
        self.frame_address = ctypes.addressof(self.frame)

    def draw(self, n: int) -> np.ndarray:
        """The permutation of n from the state in the records, which it advances."""
        out = self.out if self.reuse and self.out is not None and len(self.out) == n else None
        out = _draw_in_frame(self.fn, self.frame, self.frame_address, n, out)
        if self.reuse:
            self.out = out
        return out

    def close(self) -> None:
        """Give the generator its state back (it is then as NumPy's draws would leave it)."""
        if self.words is not None:
            self.rng.bit_generator.state = state_dict(self.words, self.buffered)
            self.words = None


def _function(native):
    """The native function, or None if it cannot be had (no LLVM to compile it, an
    unloadable object, ...: NumPy draws, this time)."""
    if _agrees is False:
        return None
    try:
        return native() if native is not None else _native().functions[FUNCTION]
    except Exception:
        return None


_native_code = None
_native_lock = forks.Lock()      # (a forked child gets a free one)


def _native():
    """lossc's own loaded copy of lossc_permutation_pcg64 (`.functions[FUNCTION]`), for
    callers that give no model's: compiled once per process (runtime/library.py, with no
    persistent cache: nothing here knows of one) unless a model's copy is in memory
    already, and loaded once per process. The code must stay alive while its function
    runs: it is kept here for good, and made under a lock (two threads loading it at
    once would each get a copy, and the one dropped would unmap code the other is
    running)."""
    global _native_code
    if _native_code is None:
        with _native_lock:
            if _native_code is None:
                from lossc.codegen.units import PERMUTATION
                from lossc.runtime import library
                from lossc.runtime.native import load_object
                _native_code = load_object(library.unit_object(PERMUTATION, "any", None),
                                           (FUNCTION,))
    return _native_code


def _draw(fn, state: dict, n: int) -> tuple[np.ndarray, dict]:
    """The permutation of n drawn natively from `state`, and the state after it."""
    words, buffered = state_records(state)
    frame = _state_frame(words, buffered)
    return (_draw_in_frame(fn, frame, ctypes.addressof(frame), n),
            state_dict(words, buffered))


def _state_frame(words, buffered):
    """The native function's frame (abi.PERMUTATION) for these state records; n and
    the output are set at each draw."""
    frame = PERMUTATION.new()
    frame.state, frame.buffered = ctypes.addressof(words), ctypes.addressof(buffered)
    return frame


def _draw_in_frame(fn, frame, frame_address: int, n: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """The permutation of n drawn from the state records `frame` points at (advanced),
    into `out` (n int64) if given."""
    if out is None:
        out = np.empty(int(n), dtype=np.int64)
    frame.n, frame.out = n, _addr(out)
    fn(frame_address)
    return out


def state_records(state: dict) -> tuple:
    """PCG64's `bit_generator.state` as the native code's records (PCG64_STATE,
    PCG64_BUFFER)."""
    s, inc = state["state"]["state"], state["state"]["inc"]
    words, buffered = PCG64_STATE.new(), PCG64_BUFFER.new()
    words.state_lo, words.state_hi = s & _MASK64, s >> 64
    words.inc_lo, words.inc_hi = inc & _MASK64, inc >> 64
    buffered.has_uint32, buffered.uinteger = state["has_uint32"], state["uinteger"]
    return words, buffered


def state_dict(words, buffered) -> dict:
    """The inverse of state_records: a dict for `bit_generator.state = ...`."""
    return {"bit_generator": "PCG64",
            "state": {"state": words.state_lo | words.state_hi << 64,
                      "inc": words.inc_lo | words.inc_hi << 64},
            "has_uint32": buffered.has_uint32, "uinteger": buffered.uinteger}


def _trusted(bg: np.random.PCG64, fn) -> bool:
    """Whether the native code draws as NumPy does, checked once per process."""
    global _agrees
    if _agrees is None:
        with _native_lock:
            if _agrees is None:
                _agrees = _matches_numpy(bg.state, fn)
    return _agrees


def _matches_numpy(state: dict, fn) -> bool:
    """Native draws against NumPy's from copies of `state`: odd and even n, with and
    without a buffered 32-bit half on entry, several permutations in a row."""
    for has_uint32 in (0, 1):
        start = dict(state, has_uint32=has_uint32)
        reference = np.random.Generator(np.random.PCG64(0))
        reference.bit_generator.state = start
        ours = start
        for n in (64, 1001, 129, 4096):
            out, ours = _draw(fn, ours, n)
            expected = reference.permutation(n)
            if not (np.array_equal(out, expected) and ours == reference.bit_generator.state):
                return False
    return True
