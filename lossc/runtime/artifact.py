"""Compiled artifacts (`.lossc` files) and the persistent compile cache.

An artifact holds the machine code for one CPU plus what is needed to call it: the
model's signature, the work size (and each code unit's own), the run-time index
checks, the warnings, and for provenance the source text and its hash, the dims,
dtype, lossc version and CPU. A cache entry is an artifact named by its cache key,
which its header records too.

Layout: b"LOSSC\\x03" | u64 little-endian header length | JSON header | object files,
one per compiled code unit (codegen/units.py), at the offsets header["objects"] gives
with their sizes and SHA-256 | HMAC-SHA256 of everything before it. Loading links the
objects into the process: no LLVM at all (runtime/elf.py). Files of the earlier
layouts (b"LOSSC\\x01", b"LOSSC\\x02") are read for their header only, so that
`lossc.load` can recompile them from their embedded source.

Who may run what (README.md, "Security"): the HMAC's key is a per-user secret kept in
the cache folder (KEY_FILE, mode 0600), so a file verifies only for the user who wrote
it, on this machine (with this cache folder). The cache folder is an argument of every
function here that uses it (lossc.options.Options.cache_dir; None: there is none, and
nothing is cached, signed or verified). A cache entry that does not verify, or
whose header does not match what it is looked up for, is a miss; `lossc.load` of an
artifact that does not verify recompiles it from its source unless the caller vouches
for it (`trust=True`). The cache folder and the key must belong to the user and be
writable by no one else (the key readable by no one else), or lossc leaves the cache
alone (with one warning); an entry that does not is not used (one warning), and the
entry compiled in its place replaces it.
Reads take regular files only, check the magic first and read no more than the header
declares, up to MAX_FILE.

Whether machine code can run here is decided by the CPU LLVM compiled it for; on Linux
a fingerprint of /proc/cpuinfo recorded beside it answers the same question for the
cache without loading LLVM.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import pathlib
import platform
import re
import secrets
import stat
import struct
import sys
import time
import warnings
from contextlib import contextmanager
from typing import NamedTuple, Optional

from lossc.codegen import abi
from lossc.files import replacing
from lossc.version import __version__

MAGIC = b"LOSSC\x03"
OLD_MAGICS = (b"LOSSC\x01", b"LOSSC\x02")
_LENGTH = struct.Struct("<Q")
TAG_SIZE = hashlib.sha256().digest_size
MAX_FILE = 1 << 28            # far above any model's code; a bound on what a read takes
# the native calling convention: a hash of the frame layouts and the constants both
# sides read (codegen/abi.py), so that no layout change goes unnoticed
ABI = abi.VERSION

KEY_FILE = "hmac-key"         # in the cache folder
KEY_SIZE = 32
# what a model's cache entry must have been compiled from (beside its key)
IDENTITY = ("source_sha256", "dims_given", "dtype")
# cache entries, and the temporary files they are written through
ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.lossc|\.tmp-[0-9a-f]{16}\.lossc")
TEMPORARY_NAME = re.compile(r"\.tmp-[0-9a-f]{16}\.lossc")
# a temporary file this much older than its last write was left by a killed process
# (a write takes milliseconds), so `lossc cache --clear` takes it even cut short
ABANDONED_AFTER = 60.0      # seconds

_OPEN_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK   # (a FIFO must not block)
_OPEN_OWN = _OPEN_FILE | os.O_NOFOLLOW                      # files in the cache folder


class ArtifactError(ValueError):
    """An artifact that cannot be used here (corrupt, or made for another CPU/version)."""


class Contents(NamedTuple):
    header: dict
    objects: dict            # code unit -> object file
    authentic: bool          # the HMAC verified with this user's key
    current: bool            # this lossc's layout (an older one has no objects read)


# ------------------------------------------------------------ the file layout

def encode(header: dict, objects: dict[str, bytes], key: Optional[bytes]) -> bytes:
    """The file for `header` and the object files of its code units, signed with `key`
    (None: an all-zero tag, which never verifies)."""
    index, offset = {}, 0
    for unit, obj in sorted(objects.items()):
        index[unit] = [offset, len(obj), hashlib.sha256(obj).hexdigest()]
        offset += len(obj)
    data = json.dumps(dict(header, objects=index), sort_keys=True).encode()
    blob = b"".join([MAGIC, _LENGTH.pack(len(data)), data]
                    + [objects[u] for u in sorted(objects)])
    return blob + (_tag(key, blob) if key is not None else bytes(TAG_SIZE))


def _tag(key: bytes, *parts) -> bytes:
    """The HMAC of the parts of a file, one after another."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(part)
    return h.digest()


def _read_exactly(fd: int, size: int) -> bytes:
    """Up to `size` bytes (fewer only at the end of the file)."""
    parts, left = [], size
    while left > 0:
        part = os.read(fd, min(left, 1 << 24))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_fd(fd: int, label: str, key: Optional[bytes]) -> Contents:
    """An artifact from an open file; `label` names it in errors."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise ArtifactError(f"{label} is not a lossc artifact (not a regular file)")
    prefix = _read_exactly(fd, len(MAGIC) + _LENGTH.size)
    magic = prefix[:len(MAGIC)]
    if magic not in (MAGIC,) + OLD_MAGICS or len(prefix) < len(MAGIC) + _LENGTH.size:
        raise ArtifactError(f"{label} is not a lossc artifact")
    damaged = ArtifactError(f"{label} is a damaged lossc artifact")
    (n,) = _LENGTH.unpack_from(prefix, len(MAGIC))
    if n > MAX_FILE:
        raise damaged
    data = _read_exactly(fd, n)
    try:
        header = json.loads(data) if len(data) == n else None
    except (ValueError, RecursionError):     # (RecursionError: JSON nested too deep)
        header = None
    if not isinstance(header, dict):
        raise damaged
    if magic != MAGIC:
        return Contents(header, {}, False, False)
    index = _object_index(header.get("objects"))
    if index is None:
        raise damaged
    body_size = sum(size for _, _, size, _ in index)
    if len(prefix) + n + body_size + TAG_SIZE > MAX_FILE:
        raise damaged
    rest = _read_exactly(fd, body_size + TAG_SIZE + 1)     # one byte more: nothing follows
    if len(rest) != body_size + TAG_SIZE:
        raise damaged
    body, tag = memoryview(rest)[:body_size], rest[body_size:]
    authentic = key is not None and hmac.compare_digest(_tag(key, prefix, data, body), tag)
    objects = {}
    for unit, offset, size, sha in index:
        obj = bytes(body[offset:offset + size])
        # (a file that verifies is the file lossc wrote: no need to hash it again)
        if not authentic and hashlib.sha256(obj).hexdigest() != sha:
            raise ArtifactError(f"{label} is a damaged lossc artifact (machine code "
                                "checksum)")
        objects[unit] = obj
    return Contents(header, objects, authentic, True)


def _object_index(index) -> Optional[list]:
    """[(unit, offset, size, sha256)] in file order, or None unless the objects tile
    the body from its start, one after another."""
    if not isinstance(index, dict):
        return None
    rows, end = [], 0
    try:
        for unit, (offset, size, sha) in sorted(index.items(), key=lambda item: item[1][0]):
            if not (type(offset) is int and type(size) is int and offset == end
                    and size >= 0 and isinstance(sha, str)):
                return None
            rows.append((unit, offset, size, sha))
            end += size
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return rows


def read(path) -> tuple[dict, dict[str, bytes]]:
    """(header, {code unit: object file}) of an artifact, checked for damage but not
    authenticated (to inspect a file: lossc.load decides what may run). A file of an
    earlier layout gives no objects."""
    contents = read_file(path, key=None)
    return contents.header, contents.objects


def read_file(path, key: Optional[bytes]) -> Contents:
    """The artifact at `path` (a regular file, read through a symbolic link), its HMAC
    checked with `key`."""
    try:
        fd = os.open(path, _OPEN_FILE)
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    try:
        return _read_fd(fd, str(path), key)
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def write(path, header: dict, objects: dict[str, bytes],
          folder: Optional[pathlib.Path]) -> None:
    """Write the artifact for `header` and the object files of its code units, signed
    with this user's key, kept in the cache folder `folder` (runtime/artifact.py
    docstring), through files.replacing."""
    key = secret(folder, create=True)
    if key is None:
        warnings.warn(f"lossc: {path} is not signed (there is no usable compile cache "
                      "folder to keep the key): lossc.load will recompile it from its "
                      "source", RuntimeWarning, stacklevel=3)
    blob = encode(header, objects, key)
    # written beside, then renamed: a reader (another process) never sees half a file
    # and a failed write leaves the old one; a symbolic link is followed and a pipe or
    # a device written in place, as for every file a command writes
    with replacing(path) as tmp:
        pathlib.Path(tmp).write_bytes(blob)


# ------------------------------------------------------------ what the header says

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
    made = header.get("cpu")
    made = made if isinstance(made, dict) else {}
    for k in ("triple", "cpu"):
        if made.get(k) != here[k]:
            return f"it was compiled for CPU {made.get('cpu')} ({made.get('triple')}), " \
                   f"this machine is {here['cpu']} ({here['triple']})"
    if made.get("features") != here["features"]:
        # (the same CPU name with other features: a virtual machine's CPU, or a kernel
        # that turns some off; naming the CPU twice said nothing)
        theirs = {feature[1:]: feature
                  for feature in str(made.get("features") or "").split(",") if feature}
        ours = {feature[1:]: feature for feature in str(here["features"]).split(",")
                if feature}
        differ = sorted(set(theirs) | set(ours), key=str)
        differ = [f"{theirs.get(n, '?' + n)} there, {ours.get(n, '?' + n)[:1]} here"
                  for n in differ if theirs.get(n) != ours.get(n)]
        shown = "; ".join(differ[:4]) + ("; ..." if len(differ) > 4 else "")
        return (f"it was compiled for CPU {here['cpu']} with other features than this "
                f"machine's ({shown})")
    return None


def inconsistency(header: dict, objects: dict) -> str | None:
    """What in the header disagrees with itself or with the objects, or None: the
    source and its hash, and the scratch space each of a model's code units needs
    (header["unit_work"]) against the work size every call provides."""
    from lossc.codegen.unit_names import LIBRARY_UNITS
    # (surrogatepass: a lone surrogate, which JSON can hold, hashes instead of raising)
    if "source" in header and not (
            isinstance(header["source"], str) and header.get("source_sha256")
            == hashlib.sha256(header["source"].encode("utf-8", "surrogatepass")).hexdigest()):
        return "its source does not match the source's hash"
    unit_work = header.get("unit_work", {})
    work = header.get("work_size")
    if not isinstance(unit_work, dict) or type(work) is not int or work < 1:
        return "its work size is not a positive integer"
    for unit in objects:
        if unit in LIBRARY_UNITS:
            continue          # (their frames hold no scratch space)
        need = unit_work.get(unit)
        if type(need) is not int or not 1 <= need <= work:
            return f"its work size does not cover the needs of its code unit {unit!r}"
    return None


# ------------------------------------------------------------ the cache folder

_warned: set = set()     # the paths warned about, once per process each


def _warn_once(path, message: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        warnings.warn(f"lossc: {message}", RuntimeWarning, stacklevel=4)


def _unsafe(st: os.stat_result) -> str | None:
    """Why a file or folder with this status must not be used, or None."""
    if st.st_uid != os.geteuid():
        return f"it belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return "other users can write to it"
    return None


def _open_folder(path: Optional[pathlib.Path],
                 create: bool) -> tuple[Optional[int], Optional[str]]:
    """(a descriptor of the cache folder `path`, None) or (None, why it cannot be used);
    (None, None) where there is none (no path, or create is False and it is missing)."""
    if path is None:
        return None, None
    path = pathlib.Path(path)
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, ("it cannot be created" if create else None)
    except OSError as e:
        return None, f"it cannot be made or opened ({e.strerror})"
    problem = _unsafe(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        return None, problem
    return fd, None


@contextmanager
def _cache_folder(path: Optional[pathlib.Path], create: bool):
    """A descriptor of the cache folder `path` (files are opened relative to it, so that
    the folder checked is the folder used), or None where there is none or it is not
    safe to use (with one warning)."""
    fd, problem = _open_folder(path, create)
    if problem is not None:
        _warn_once(path, f"not using the compile cache {path}: {problem}")
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def secret(path: Optional[pathlib.Path], create: bool = False) -> Optional[bytes]:
    """This user's key for signing and checking lossc's files, kept in the cache folder
    `path`, made if need be (create); None where the cache folder or the key file is
    missing or not safe to use."""
    with _cache_folder(path, create) as folder:
        return None if folder is None else _key(folder, pathlib.Path(path), create)


def _key(folder: int, where: pathlib.Path, create: bool) -> Optional[bytes]:
    """The key in the folder open as `folder` (its path `where`, for messages)."""
    path = where / KEY_FILE
    try:
        try:
            return _read_key(folder)
        except FileNotFoundError:
            if not create:
                return None
        _make_key(folder)
        return _read_key(folder)
    except (OSError, ArtifactError) as e:
        _warn_once(path, f"not using the compile cache's key {path}: "
                         f"{e.strerror if isinstance(e, OSError) else e}")
        return None


def _read_key(folder: int) -> bytes:
    fd = os.open(KEY_FILE, _OPEN_OWN, dir_fd=folder)
    try:
        st = os.fstat(fd)
        problem = _unsafe(st)
        if problem is None and st.st_mode & 0o044:
            problem = "other users can read it"
        if problem is None and (not stat.S_ISREG(st.st_mode) or st.st_size != KEY_SIZE):
            problem = "it is not a key lossc made"
        if problem is not None:
            raise ArtifactError(problem)
        key = _read_exactly(fd, KEY_SIZE)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise ArtifactError("it is not a key lossc made")
    return key


def _make_key(folder: int) -> None:
    """A new key, written to a file of its own and then linked to KEY_FILE: the link
    fails if another process made the key first (its key is used), and a reader never
    sees a key half written."""
    tmp = f".key-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_SIZE))
        try:
            os.link(tmp, KEY_FILE, src_dir_fd=folder, dst_dir_fd=folder)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp, dir_fd=folder)


# ------------------------------------------------------------ cache entries

def entry_name(key: str) -> str:
    return f"{key}.lossc"


def cache_lookup(path: Optional[pathlib.Path], key: str, expected: dict):
    """(header, objects) of the entry `key` of the cache folder `path`, if it verifies,
    was made for what `expected` says (header fields and their values) and can run
    here; else None."""
    with _cache_folder(path, create=False) as folder:
        if folder is None:
            return None
        secret_key = _key(folder, pathlib.Path(path), create=False)
        if secret_key is None:
            return None
        contents = _read_entry(folder, pathlib.Path(path), key, secret_key)
    if contents is None or not contents.authentic:
        return None
    header = contents.header
    if any(header.get(k) != v for k, v in dict(expected, cache_key=key).items()):
        return None
    if mismatch(header) is not None or inconsistency(header, contents.objects) is not None:
        return None
    return header, contents.objects


def _read_entry(folder: int, where: pathlib.Path, key: str,
                secret_key: bytes) -> Optional[Contents]:
    name = entry_name(key)
    try:
        fd = os.open(name, _OPEN_OWN, dir_fd=folder)
    except OSError:
        return None
    try:
        problem = _unsafe(os.fstat(fd))
        if problem is not None:
            _warn_once(where / name, f"not using the cache entry {where / name}: {problem}")
            return None
        return _read_fd(fd, name, secret_key)
    except (ArtifactError, OSError):
        return None
    finally:
        os.close(fd)


def cache_store(path: Optional[pathlib.Path], key: str, header: dict,
                objects: dict[str, bytes]) -> None:
    """Write the entry `key` of the cache folder `path` (atomically: write, then
    rename)."""
    try:
        with _cache_folder(path, create=True) as folder:
            secret_key = None if folder is None else _key(folder, pathlib.Path(path),
                                                          create=True)
            if secret_key is None:
                return
            blob = encode(dict(header, cache_key=key), objects, secret_key)
            tmp = f".tmp-{secrets.token_hex(8)}.lossc"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(tmp, entry_name(key), src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                os.unlink(tmp, dir_fd=folder)
                raise
    except OSError as e:  # a read-only home must not stop compilation
        warnings.warn(f"lossc: could not write the compile cache: {e}", RuntimeWarning)


def cache_files(path: pathlib.Path, delete: bool = False) -> list[tuple[str, int]]:
    """(name, size) of each cache entry in the cache folder `path`: a file named like
    one (or like the temporary file one is written through) that starts with an
    artifact's magic; delete: and delete them (not the key, so that artifacts saved
    before still verify). Raises ArtifactError if the folder is not safe to use."""
    folder, problem = _open_folder(path, create=False)
    if problem is not None:
        raise ArtifactError(f"not using the compile cache {path}: {problem}")
    if folder is None:
        return []
    try:
        found = [(name, size) for name in sorted(os.listdir(folder))
                 if ENTRY_NAME.fullmatch(name)
                 and (size := _entry_size(folder, name)) is not None]
        for name, _ in found if delete else ():
            try:
                os.unlink(name, dir_fd=folder)
            except FileNotFoundError:
                pass
        return found
    finally:
        os.close(folder)


def _abandoned_write(prefix: bytes, st: os.stat_result) -> bool:
    """Whether a temporary cache file whose first bytes are `prefix` is what a write
    killed part-way leaves: empty, or as much of an artifact's magic as it holds,
    and not written to for ABANDONED_AFTER seconds (a write still going on is left to
    finish)."""
    head = prefix[:len(MAGIC)]
    return (time.time() - st.st_mtime > ABANDONED_AFTER
            and any(m.startswith(head) for m in (MAGIC,) + OLD_MAGICS))


def _entry_size(folder: int, name: str) -> Optional[int]:
    """The size of a regular file laid out as an artifact (its magic, a JSON header of
    the length it gives, and for the current layout the objects the header lists and
    the tag, nothing more), or of a temporary file a killed write left (its first bytes
    an artifact's, cut anywhere, and untouched for ABANDONED_AFTER), else None: a
    user's file that merely starts like one is not an entry."""
    try:
        fd = os.open(name, _OPEN_OWN, dir_fd=folder)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        prefix = _read_exactly(fd, len(MAGIC) + _LENGTH.size)
        magic = prefix[:len(MAGIC)]
        if TEMPORARY_NAME.fullmatch(name) and _abandoned_write(prefix, st):
            return st.st_size
        if magic not in (MAGIC,) + OLD_MAGICS or len(prefix) < len(MAGIC) + _LENGTH.size:
            return None
        (n,) = _LENGTH.unpack_from(prefix, len(MAGIC))
        if n > MAX_FILE or len(prefix) + n > st.st_size:
            return None
        try:
            header = json.loads(_read_exactly(fd, n))
        except (ValueError, RecursionError):
            return None
        if not isinstance(header, dict):
            return None
        if magic == MAGIC:
            index = _object_index(header.get("objects"))
            if index is None or st.st_size != len(prefix) + n + sum(
                    size for _, _, size, _ in index) + TAG_SIZE:
                return None
        return st.st_size
    except OSError:
        return None
    finally:
        os.close(fd)
