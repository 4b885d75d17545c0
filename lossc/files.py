"""Paths a command reads and writes: writing output files without losing what was
there, and saying why an input path cannot be read.

A command checks its outputs before its work starts (`check_writable`, `same_file`), so
a run is not lost to a path it cannot write at the end, and it writes each output
through `replacing`: the new content goes to a temporary file beside the destination,
which then takes the destination's place in one rename. A write that fails (a full
disk, a file size limit) leaves the old file as it was and no half-written file.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
import stat
import tempfile


class OutputError(ValueError):
    """An output path that cannot be written."""


def not_a_file(path) -> str:
    """Why `path`, which is not a regular file, cannot be read as one."""
    path = pathlib.Path(path)
    if path.is_dir():
        return "a folder, not a file"
    return "not a regular file" if path.exists() else "no such file"


def same_file(a, b) -> bool:
    """Whether the paths a and b name one file: the same path once symbolic links are
    resolved, or (both existing) the same file under two names (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:          # one of them does not exist (yet)
        return False


def written_in_place(path) -> bool:
    """Whether `replacing(path)` writes into the file `path` names rather than replace
    it: a device or a pipe (links followed). Its name is then used as it is, with no
    suffix added."""
    target = pathlib.Path(os.path.realpath(path))
    return target.exists() and not target.is_file() and not target.is_dir()


def check_writable(path) -> None:
    """Raise OutputError unless `replacing(path)` can write `path`: its folder exists,
    a new file can be created in it (tried, then removed), and `path` is not a folder
    or a read-only file."""
    target = pathlib.Path(os.path.realpath(path))
    folder = target.parent
    reason = _no_place_for(target)
    if reason:
        raise OutputError(reason)
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError("the file is read-only")
    if written_in_place(target):
        return
    try:
        fd, tmp = _create_beside(target)
    except OSError as e:
        raise OutputError(f"cannot create a file in {folder}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def _no_place_for(target: pathlib.Path) -> str:
    """Why no file can be written at `target` (a resolved path): it is a folder, or its
    folder does not exist or is not one; "" if neither."""
    if target.is_dir():
        return "it is a folder"
    if not target.parent.exists():
        return f"the folder {target.parent} does not exist"
    if not target.parent.is_dir():
        return f"{target.parent} is not a folder"
    return ""


def _create_beside(target: pathlib.Path) -> tuple[int, pathlib.Path]:
    """A new empty file in target's folder, with a name no other file has, created
    with the permissions a new file gets (0o666 less the umask)."""
    while True:
        tmp = target.parent / f".lossc-{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def replacing(path):
    """A temporary path to write the new content of `path` to. When the block ends
    without an exception, the temporary file takes path's place in one rename, with the
    old file's permissions (a new file's, if there was none); on an exception it is
    removed and `path` is left untouched. A symbolic link is followed (the file it
    names is replaced). A destination that is not a regular file (a device, a pipe) is
    not replaced but written in place once the block is done. An empty path, a folder,
    or a path whose folder does not exist is an OutputError naming it (the OSError of
    the rename or of the temporary file named the temporary file)."""
    if not str(path):
        raise OutputError("cannot write '': the path is empty")
    target = pathlib.Path(os.path.realpath(path))
    reason = _no_place_for(target)
    if reason:
        raise OutputError(f"cannot write {path}: {reason}")
    if written_in_place(target):
        with tempfile.TemporaryDirectory() as d:
            tmp = pathlib.Path(d) / target.name
            yield tmp
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    fd, tmp = _create_beside(target)
    os.close(fd)
    try:
        mode = stat.S_IMODE(os.stat(target if target.exists() else tmp).st_mode)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)              # the content is on disk before the name moves
        finally:
            os.close(fd)
        # (after the fsync: a read-only file's mode, 0444, would refuse opening it to
        # write; the writer may have put a file of its own at tmp, with other permissions)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
