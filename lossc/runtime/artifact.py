"""Compiled artifacts (`.lossc` files) and the persistent compile cache.

An artifact holds the machine code for one CPU plus what is needed to call it: the
model's signature, the work size, the run-time index checks, the warnings, and for
provenance the source text and its hash, the dims, dtype, lossc version and CPU.

Layout: b"LOSSC\\x01" | u64 little-endian header length | JSON header | object code.
Loading links the object code into the process: no LLVM optimization or code generation.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import tempfile
import warnings

from lossc import __version__

MAGIC = b"LOSSC\x01"
ABI = 2   # the native functions' frame layouts (codegen/llvm.py, codegen/fused.py)


class ArtifactError(ValueError):
    """An artifact that cannot be used here (corrupt, or made for another CPU/version)."""


def write(path, header: dict, obj: bytes) -> None:
    data = json.dumps(header, sort_keys=True).encode()
    blob = MAGIC + struct.pack("<Q", len(data)) + data + obj
    path = pathlib.Path(path)
    # write then rename: a reader (another process using the cache) never sees half a file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".lossc")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path) -> tuple[dict, bytes]:
    try:
        blob = pathlib.Path(path).read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 8:
        raise ArtifactError(f"{path} is not a lossc artifact")
    (n,) = struct.unpack("<Q", blob[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    try:
        header = json.loads(blob[start:start + n])
    except ValueError:
        raise ArtifactError(f"{path} is a damaged lossc artifact") from None
    obj = blob[start + n:]
    if hashlib.sha256(obj).hexdigest() != header.get("object_sha256"):
        raise ArtifactError(f"{path} is a damaged lossc artifact (machine code checksum)")
    return header, obj


def mismatch(header: dict) -> str | None:
    """Why this artifact's machine code cannot run here, or None."""
    from lossc.codegen.jit import host_cpu
    if header.get("abi") != ABI:
        return f"its calling convention (abi {header.get('abi')}) is not this lossc's ({ABI})"
    if header.get("lossc_version") != __version__:
        return (f"it was made by lossc {header.get('lossc_version')}, this is lossc "
                f"{__version__}")
    here = host_cpu()
    made = header.get("cpu", {})
    for k in ("triple", "cpu", "features"):
        if made.get(k) != here[k]:
            return f"it was compiled for CPU {made.get('cpu')} ({made.get('triple')}), " \
                   f"this machine is {here['cpu']} ({here['triple']})"
    return None


def cache_dir() -> pathlib.Path:
    root = os.environ.get("LOSSC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lossc")
    return pathlib.Path(root)


def cache_lookup(key: str):
    path = cache_dir() / f"{key}.lossc"
    if not path.exists():
        return None
    try:
        header, obj = read(path)
    except (ArtifactError, OSError):
        return None
    return (header, obj) if mismatch(header) is None else None


def cache_store(key: str, header: dict, obj: bytes) -> None:
    try:
        d = cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        write(d / f"{key}.lossc", header, obj)
    except OSError as e:  # a read-only home must not stop compilation
        warnings.warn(f"lossc: could not write the compile cache: {e}", RuntimeWarning)
