"""Compiled artifacts (`.lossc` files) and the persistent compile cache.

An artifact holds the machine code for one CPU plus what is needed to call it: the
model's signature, the work size, the run-time index checks, the warnings, and for
provenance the source text and its hash, the dims, dtype, lossc version and CPU.

Layout: b"LOSSC\\x02" | u64 little-endian header length | JSON header | object files,
one per compiled code unit (codegen/units.py), at the offsets header["objects"] gives
with their sizes and SHA-256. Loading links them into the process: no LLVM at all
(runtime/elf.py). Files of the first layout (b"LOSSC\\x01", one object) are read so
that `lossc.load` can recompile them from their embedded source.

Whether machine code can run here is decided by the CPU LLVM compiled it for; on Linux
a fingerprint of /proc/cpuinfo recorded beside it answers the same question for the
cache without loading LLVM.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import platform
import struct
import sys
import tempfile
import warnings

from lossc import __version__

MAGIC = b"LOSSC\x02"
MAGIC_V1 = b"LOSSC\x01"
# the native functions' frame layouts (codegen/llvm.py, codegen/fused.py); 5: the
# gradient reads err[3:5] (a later batch to prefetch), the fused steps 23 slots; 6: the
# fused steps' configuration has 8 numbers
ABI = 6


class ArtifactError(ValueError):
    """An artifact that cannot be used here (corrupt, or made for another CPU/version)."""


def write(path, header: dict, objects: dict[str, bytes]) -> None:
    """Write the artifact for `header` and the object files of its code units."""
    index, offset = {}, 0
    for unit, obj in sorted(objects.items()):
        index[unit] = [offset, len(obj), hashlib.sha256(obj).hexdigest()]
        offset += len(obj)
    data = json.dumps(dict(header, objects=index), sort_keys=True).encode()
    blob = b"".join([MAGIC, struct.pack("<Q", len(data)), data]
                    + [objects[u] for u in sorted(objects)])
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


def read(path) -> tuple[dict, dict[str, bytes]]:
    """(header, {code unit: object file}); an artifact of the first layout gives no
    objects (its ABI tells `mismatch` that it must be recompiled)."""
    try:
        blob = pathlib.Path(path).read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    magic = blob[:len(MAGIC)]
    if magic not in (MAGIC, MAGIC_V1) or len(blob) < len(MAGIC) + 8:
        raise ArtifactError(f"{path} is not a lossc artifact")
    (n,) = struct.unpack("<Q", blob[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    try:
        header = json.loads(blob[start:start + n])
    except ValueError:
        raise ArtifactError(f"{path} is a damaged lossc artifact") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path} is a damaged lossc artifact")
    body = memoryview(blob)[start + n:]
    objects = {}
    if magic == MAGIC:
        try:
            for unit, (offset, size, sha) in header["objects"].items():
                obj = bytes(body[offset:offset + size])
                if len(obj) != size or hashlib.sha256(obj).hexdigest() != sha:
                    raise ValueError(unit)
                objects[unit] = obj
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path} is a damaged lossc artifact (machine code "
                                "checksum)") from None
    return header, objects


@functools.lru_cache(maxsize=None)
def host_fingerprint() -> str:
    """This machine's CPU as /proc/cpuinfo describes it, with the LLVM version that
    compiles for it; "" where there is no /proc/cpuinfo. Reading it costs microseconds,
    where asking LLVM means loading LLVM."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            first_cpu = f.read(1 << 16).split(b"\n\n", 1)[0]
    except OSError:
        return ""
    keep = (b"vendor_id", b"cpu family", b"model", b"model name", b"flags", b"Features",
            b"CPU implementer", b"CPU architecture", b"CPU variant", b"CPU part")
    lines = [ln for ln in first_cpu.splitlines() if ln.split(b":")[0].strip() in keep]
    if not lines:
        return ""
    import llvmlite      # the package's version only: llvmlite.binding is what is slow
    h = hashlib.sha256(b"\n".join(lines))
    h.update(f"{sys.platform} {platform.machine()} llvmlite {llvmlite.__version__}".encode())
    return h.hexdigest()


def mismatch(header: dict) -> str | None:
    """Why this artifact's machine code cannot run here, or None."""
    if header.get("abi") != ABI:
        return f"its calling convention (abi {header.get('abi')}) is not this lossc's ({ABI})"
    if header.get("lossc_version") != __version__:
        return (f"it was made by lossc {header.get('lossc_version')}, this is lossc "
                f"{__version__}")
    if header.get("host") and header["host"] == host_fingerprint():
        return None
    from lossc.codegen.jit import host_cpu
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
    try:
        header, objects = read(path)
    except (ArtifactError, OSError):
        return None
    return (header, objects) if mismatch(header) is None else None


def cache_store(key: str, header: dict, objects: dict[str, bytes]) -> None:
    try:
        d = cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        write(d / f"{key}.lossc", header, objects)
    except OSError as e:  # a read-only home must not stop compilation
        warnings.warn(f"lossc: could not write the compile cache: {e}", RuntimeWarning)
