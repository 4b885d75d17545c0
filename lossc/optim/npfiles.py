"""Reading .npy and .npz files that may be cut short, corrupt or lying, and writing
.npz files whose arrays may have any name.

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
    """The arrays in a .npz file by name (no pickled objects). Every member must be a
    .npy array: np.load would parse any member that starts like one, unchecked, and
    hand over the bytes of any other."""
    try:
        arrays = {}
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename.removesuffix(".npy")
                what = f"member '{info.filename}'"
                if name in arrays:
                    raise ValueError(f"{what} holds array '{name}' a second time")
                with z.open(info) as f:
                    _check_header(f, info.file_size, what)
                with z.open(info) as f:
                    arrays[name] = npy_format.read_array(f, allow_pickle=False)
        return arrays
    except READ_ERRORS as e:
        raise ValueError(_reason(e)) from None


def save_npz(f, arrays: dict) -> None:
    """Write `arrays` to the open binary file f as a .npz, each under its name, as
    np.savez(f, **arrays) would (uncompressed, zip64 members). np.savez takes the names
    as keyword arguments: an array named 'file' clashes with its first parameter (a
    TypeError) and one named 'allow_pickle' is taken as that option and not written.
    No pickled objects: lossc reads none back."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as z:
        for name, value in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                npy_format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _check_header(f, size: int, what: str) -> None:
    """Read a .npy header from f (a file or zip member of `size` bytes) and check that
    it describes an array of numbers or text that the bytes after it hold."""
    magic = f.read(npy_format.MAGIC_LEN)
    if not magic.startswith(npy_format.MAGIC_PREFIX) or len(magic) < npy_format.MAGIC_LEN:
        raise ValueError(f"{what} is not a NumPy array (.npy data)")
    version = (magic[-2], magic[-1])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"{what} is in .npy format version {version[0]}.{version[1]}, "
                         "which lossc does not read")
    # (version 3 differs from 2 only in the encoding of field names: utf-8, not latin-1)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else \
        npy_format.read_array_header_2_0
    shape, _, dtype = read(f)
    if dtype.hasobject:
        raise ValueError(f"{what} holds Python objects (dtype {dtype}), which would be "
                         "unpickled: lossc reads arrays of fixed-size values only")
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
