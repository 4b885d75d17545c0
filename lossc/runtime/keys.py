"""Persistent-cache keys: what makes two compilations' machine code the same.

A key hashes what the caller names (a model's source, dims and dtype, or a library
unit and its dtype) with what makes machine code differ beyond them: lossc's version
and its own source files, the vector width asked for, and the CPU.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
from typing import Optional

from lossc.version import __version__


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """lossc's own source files by name, size and modification time: the compiler is
    part of what makes the code. (Stat rather than read: this is on the cache's
    critical path, and any edit changes the time.)"""
    h = hashlib.sha256()
    root = pathlib.Path(__file__).resolve().parents[1]
    for name, st in sorted(_python_files(str(root), "")):
        h.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _python_files(folder: str, prefix: str):
    """(path below the package, stat) of each .py file under `folder`: os.scandir and
    strings, cheaper than pathlib's rglob and Path objects on a cache hit's path."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _python_files(entry.path, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".py"):
                yield f"{prefix}{entry.name}", entry.stat()


def host_key() -> str:
    """This machine's CPU, for cache keys (without loading LLVM where possible)."""
    from lossc.runtime.artifact import host_fingerprint
    host = host_fingerprint()
    if not host:     # no /proc/cpuinfo: ask LLVM
        from lossc.codegen.jit import host_cpu
        host = repr(sorted(host_cpu().items()))
    return host


def key_of(*parts: str, vector_bits: Optional[int] = None) -> str:
    """A persistent-cache key: `parts`, the vector width asked for (None: the CPU's
    widest), and what makes machine code differ beyond them (lossc's version and code,
    the CPU)."""
    h = hashlib.sha256()
    for part in parts + (__version__, code_fingerprint(),
                         "" if vector_bits is None else str(vector_bits), host_key()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def model_key(source, dims: Optional[dict], dtype: str, bits: Optional[int] = None) -> str:
    """The persistent-cache key of a model: its source (a lossc.source.Source), dims
    and dtype, and the vector width asked for (bits; None: the CPU's widest)."""
    return key_of(source.text, repr(sorted((dims or {}).items())), dtype, vector_bits=bits)
