"""Reading .npy and .npz files that may be cut short, corrupt or lying.

np.load allocates the array a header describes before reading its bytes, so a 100-byte
file whose header claims 10**12 rows asks for 8 TB; and a damaged zip raises
zipfile.BadZipFile or zlib.error, which are not ValueErrors. Here each array's header
is checked against the bytes the file holds (and the machine's memory) first, and
every failure to read is a ValueError saying what is wrong.
"""
from __future__ import annotations

import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from lossc.memory import check_array_fits

# what reading a damaged file can raise, besides ValueError: a zip's structure or CRC
# (BadZipFile), its deflate stream (zlib.error), a short read (EOFError), a member
# compressed with a method zipfile lacks (NotImplementedError) or encrypted
# (RuntimeError)
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
               NotImplementedError, RuntimeError)


def load_npy(path) -> np.ndarray:
    """The array in a .npy file (no pickled objects)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
            _check_header(f, size, "the array")
        return np.load(path, allow_pickle=False)
    except READ_ERRORS as e:
        raise ValueError(_reason(e)) from None


def load_npz(path) -> dict:
    """The arrays in a .npz file by name (no pickled objects)."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        _check_header(f, info.file_size, f"array '{info.filename[:-4]}'")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except READ_ERRORS as e:
        raise ValueError(_reason(e)) from None


def _check_header(f, size: int, what: str) -> None:
    """Read a .npy header from f (a file or zip member of `size` bytes) and check that
    the bytes after it hold the array it describes."""
    version = npy_format.read_magic(f)
    # (version 3 differs from 2 only in the encoding of field names: utf-8, not latin-1)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else \
        npy_format.read_array_header_2_0
    shape, _, dtype = read(f)
    if dtype.hasobject:
        return                 # np.load refuses pickled objects itself, with a message
    need = check_array_fits(shape, dtype, what)
    held = size - f.tell()
    if need > held:
        raise ValueError(f"{what} is cut short: its header says shape {tuple(shape)} of "
                         f"{dtype} ({need:,} bytes), but the file holds {max(held, 0):,}")


def _reason(e: BaseException) -> str:
    if isinstance(e, zipfile.BadZipFile):
        return f"not a valid .npz (zip) file: {e}"
    if isinstance(e, zlib.error):
        return f"its compressed data is corrupt: {e}"
    if isinstance(e, EOFError):
        return f"the file is cut short: {e}"
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)
