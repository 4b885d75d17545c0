"""How lossc compiles and loads machine code: the settings a compilation carries.

An `Options` travels as an argument from `lossc.compile` and `lossc.load` down to code
generation and the runtime; nothing below reads the environment. Where a caller gives
none, the environment is read once, at that call (`Options.from_env`), so the
variables of the README keep working:

    LOSSC_VECTOR_BITS   64, 128, 256 or 512: the SIMD width instead of the CPU's widest
    LOSSC_LOADER        llvm: load machine code with LLVM's MCJIT, not lossc's ELF loader
    LOSSC_CACHE_DIR     the compile cache folder (default $XDG_CACHE_HOME/lossc, or
                        ~/.cache/lossc)

    opts = lossc.Options.from_env()                     # what lossc.compile uses
    m = lossc.compile("m.loss", options=dataclasses.replace(opts, vector_bits=256))
"""
from __future__ import annotations

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
    artifacts (README.md, "Security"); None: no folder at all, so nothing is cached,
    saved artifacts are not signed and loaded ones do not verify."""

    vector_bits: Optional[int] = None
    loader: str = "elf"
    cache_dir: Optional[pathlib.Path] = None

    def __post_init__(self):
        if self.vector_bits is not None and (type(self.vector_bits) is not int
                                             or self.vector_bits not in VECTOR_BITS):
            raise ValueError(f"vector_bits must be one of {VECTOR_BITS} or None, got "
                             f"{self.vector_bits!r}")
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {LOADERS}, got {self.loader!r}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", pathlib.Path(self.cache_dir))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Options":
        """The options the environment asks for (os.environ by default). A
        LOSSC_VECTOR_BITS that is not a vector width is a ValueError naming it."""
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
        return cls(vector_bits=bits, loader=loader, cache_dir=pathlib.Path(cache))


def _home(env: Mapping[str, str]) -> str:
    """The user's home folder: $HOME, else what the password database says."""
    home = env.get("HOME")
    if home:
        return home
    return os.path.expanduser("~")
