"""How lossc compiles and loads machine code: the settings a compilation carries.

An `Options` travels as an argument from `lossc.compile` and `lossc.load` down to code
generation and the runtime; nothing below reads the environment. Where a caller gives
none, the environment is read once, at that call (`Options.from_env`), so the
variables of the README keep working:

    LOSSC_VECTOR_BITS   64, 128, 256 or 512: the SIMD width instead of the CPU's widest
    LOSSC_LOADER        llvm: load machine code with LLVM's MCJIT, not lossc's ELF loader
    LOSSC_CACHE_DIR     the compile cache folder (unset or empty: $XDG_CACHE_HOME/lossc,
                        or ~/.cache/lossc), made absolute when read (a leading ~/ is
                        the home folder, as the shell has it)
    OMP_NUM_THREADS     the threads a model splits large batches across (the first
                        number of an OpenMP list), as NumPy's BLAS and PyTorch read it;
                        unset: one per core the process may run on

    opts = lossc.Options.from_env()                     # what lossc.compile uses
    m = lossc.compile("m.loss", options=dataclasses.replace(opts, vector_bits=256))
"""
from __future__ import annotations

import numbers
import os
import pathlib
from dataclasses import dataclass
from typing import Mapping, Optional

VECTOR_BITS = (64, 128, 256, 512)
LOADERS = ("elf", "llvm")


@dataclass(frozen=True)
class Options:
    """vector_bits: the SIMD width the samples are spread over (64 turns lanes off);
    None: the widest this CPU has. loader: "elf" (lossc's own ELF loader, which needs
    nothing from LLVM; MCJIT where it does not apply) or "llvm" (MCJIT always).
    cache_dir: the compile cache folder, which also keeps this user's key for signing
    artifacts (README.md, "Security"), a relative one taken from the current folder
    when the Options are made; None: no folder at all, so nothing is cached, saved
    artifacts are not signed and loaded ones do not verify ("" is refused). threads:
    how many threads a model's large batches are split across (Model.set_threads
    changes a model's own); None: one per core the process may run on
    (available_cores)."""

    vector_bits: Optional[int] = None
    loader: str = "elf"
    cache_dir: Optional[pathlib.Path] = None
    threads: Optional[int] = None

    def __post_init__(self):
        if self.vector_bits is not None and (not is_integer(self.vector_bits)
                                             or self.vector_bits not in VECTOR_BITS):
            raise ValueError(f"vector_bits must be one of {VECTOR_BITS} or None, got "
                             f"{self.vector_bits!r}")
        if self.vector_bits is not None:
            object.__setattr__(self, "vector_bits", int(self.vector_bits))
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {LOADERS}, got {self.loader!r}")
        if self.cache_dir is not None:
            if isinstance(self.cache_dir, str) and not self.cache_dir:
                # (pathlib.Path("") is ".": the current folder would become the cache)
                raise ValueError("cache_dir must name a folder, or be None for no cache; "
                                 "got ''")
            # made absolute now: a relative folder taken later, after an os.chdir,
            # would be another cache with another signing key
            object.__setattr__(self, "cache_dir", pathlib.Path(self.cache_dir).absolute())
        if self.threads is not None and (not is_integer(self.threads) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got "
                             f"{self.threads!r}")
        if self.threads is not None:
            object.__setattr__(self, "threads", int(self.threads))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Options":
        """The options the environment asks for (os.environ by default). A
        LOSSC_VECTOR_BITS that is not a vector width, or an OMP_NUM_THREADS that is
        not a positive number of threads, is a ValueError naming it."""
        env = os.environ if environ is None else environ
        bits = env.get("LOSSC_VECTOR_BITS") or None
        if bits is not None:
            if bits not in [str(b) for b in VECTOR_BITS]:
                raise ValueError("LOSSC_VECTOR_BITS must be 64, 128, 256 or 512, got "
                                 f"{bits!r}")
            bits = int(bits)
        loader = "llvm" if env.get("LOSSC_LOADER", "") == "llvm" else "elf"
        cache = env.get("LOSSC_CACHE_DIR") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join(_home(env), ".cache"), "lossc")
        if cache == "~" or cache.startswith("~/"):
            # (a shell expands ~ only unquoted: "~/cache" made a folder named ~ here)
            cache = _home(env) + cache[1:]
        return cls(vector_bits=bits, loader=loader, cache_dir=pathlib.Path(cache),
                   threads=_omp_threads(env.get("OMP_NUM_THREADS", "")))

    def thread_count(self) -> int:
        """The threads a model made with these options starts with."""
        return self.threads if self.threads is not None else available_cores()


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or a
    `taskset` limit), which os.cpu_count() does not see."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):       # (no sched_getaffinity: macOS, Windows)
        return os.cpu_count() or 1


def is_integer(value) -> bool:
    """An integer, Python's or NumPy's, not a bool: what a count or a width given in
    Python may be (Options, Model.set_threads); 2.0, "2" and True are refused rather
    than converted."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _omp_threads(value: str) -> Optional[int]:
    """OMP_NUM_THREADS as a thread count: None when unset or empty; for an OpenMP
    list ("4,2", one count per nesting level) its first number."""
    first = value.split(",", 1)[0].strip()
    if not value.strip():
        return None
    if not first.isdigit() or int(first) < 1:
        raise ValueError(f"OMP_NUM_THREADS must be a positive number of threads, got "
                         f"{value!r}")
    return int(first)


def _home(env: Mapping[str, str]) -> str:
    """The user's home folder: $HOME, else what the password database says."""
    home = env.get("HOME")
    if home:
        return home
    return os.path.expanduser("~")
