"""Loading training data for a model: CSV, .npy and .npz, checked against its inputs.

CSV with a header names columns by input: a scalar input `y` is column `y`; element j
of a vector input `x` is `x.j` or `x[j]`; element (i, j) of a matrix input `M` is
`M.i.j`, `M[i,j]` or `M[i][j]`. The columns may come in any order, and every column must
belong to an input. Without a header (the first row is all numbers), the columns are
the inputs' elements in declaration order, each input in row-major order. A .npz holds
one array per input name; a .npy is the single input of a one-input model.

A pandas DataFrame (`data=` in Python) is read as a CSV with a header: its column
names are the header (pandas is imported only by the caller that made the frame).

Every problem raises DataError (a ValueError) naming the file, and the column and the
row where there is one: rows are the file's line numbers (the header is line 1), as an
editor shows them.

A reader given `only` (the names of some inputs: lossc predict's, those its outputs
use) still wants every input's columns or array, but reads and checks only these: the
others' cells, a test set's blank labels, are not looked at.
"""
from __future__ import annotations

import csv
import itertools
import pathlib
import re
from typing import Optional

import numpy as np

from lossc.files import not_a_file
from lossc.optim.npfiles import load_npy, load_npz
from lossc.runtime.calls import as_array


class DataError(ValueError):
    """Training data that does not fit the model."""


class InputMissing(DataError):
    """Data without one of the model's inputs (`input`, its name, where one is named):
    the data may still hold what a use of fewer inputs needs (lossc predict reads only
    the inputs of the outputs then)."""

    def __init__(self, message: str, input: Optional[str] = None):
        super().__init__(message)
        self.input = input


def column_names(spec) -> list[list[str]]:
    """For each element of an input (row-major), the names its column may have; the
    first is the one lossc writes."""
    return list(_each_column_names(spec))


def _each_column_names(spec):
    """column_names one element at a time (an input may have 10**9 elements, and a
    header that lacks one of the first is reported without listing them all)."""
    if not spec.shape:
        yield [spec.name]
        return
    for idx in _row_major(spec.shape):
        dotted = spec.name + "".join(f".{i}" for i in idx)
        bracket = f"{spec.name}[{','.join(map(str, idx))}]"
        nested = spec.name + "".join(f"[{i}]" for i in idx)
        yield list(dict.fromkeys([dotted, bracket, nested]))


def _row_major(shape: tuple):
    """The indices of an array of `shape` in row-major order, made one at a time
    (itertools.product and np.ndindex first make a tuple of each range)."""
    if not shape:
        yield ()
        return
    for i in range(shape[0]):
        for rest in _row_major(shape[1:]):
            yield (i,) + rest


def load_data(path, model, only=None) -> dict:
    """A dict input name -> array (samples first) for `model` (anything with `.inputs`,
    a Model or a Signature), read from a .csv, .npz or .npy file; with `only`, for
    those inputs alone (module docstring)."""
    path = pathlib.Path(path)
    if not model.inputs:
        raise DataError(f"{path}: the model has no inputs, so it takes no data; train it "
                        "by steps")
    if not path.is_file():
        raise DataError(f"{path}: {not_a_file(path)}")
    suffix = path.suffix.lower()
    try:
        magic = suffix not in (".npz", ".npy") or _has_magic(path, suffix)
    except OSError as e:
        raise DataError(f"{path}: cannot read it: {e.strerror or e}") from None
    if not magic:
        raise DataError(f"{path}: not a {suffix} file (numpy.save{'z' if suffix == '.npz' else ''}"
                        " writes those)")
    if suffix == ".npy" and len(model.inputs) != 1:
        raise InputMissing(f"{path}: a .npy file holds one array, but the model has "
                        f"inputs {', '.join(i.name for i in model.inputs)}; use a "
                        ".npz (one array per input) or a .csv")
    if suffix in (".npz", ".npy"):
        try:
            arrays = (load_npz(path) if suffix == ".npz"
                      else {model.inputs[0].name: load_npy(path)})
        except ValueError as e:
            raise DataError(f"{path}: cannot read it as {suffix}: {e}") from None
        return check_arrays(arrays, model, str(path), only=only)
    try:
        return load_csv(path, model, only)
    except OSError as e:
        raise DataError(f"{path}: cannot read it: {e.strerror or e}") from None


def _has_magic(path, suffix: str) -> bool:
    """Whether the file starts as a .npz (a zip) or .npy file does."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head.startswith(b"PK") if suffix == ".npz" else head == b"\x93NUMPY"


def check_arrays(arrays: dict, model, where: str = "data", finite: bool = True,
                 only=None, row: str = "sample") -> dict:
    """Check a dict of arrays against the model's inputs: every input present, no other
    name, shapes (N, *input shape) with one N, numbers only, no NaN or infinity, whole
    numbers in int inputs (converted to int64). Returns a new dict in input order.
    finite=False leaves the real inputs' NaN and infinity check to the caller
    (check_finite), for a copy it makes anyway. With `only`, the arrays of the other
    inputs are neither checked nor returned (module docstring). `row` is what a message
    calls a row (a chunk's: "row", counted in the chunk)."""
    names = [i.name for i in model.inputs]
    for k in arrays:
        if k not in names:
            raise DataError(f"{where}: '{k}' is not an input of the model (inputs: "
                            f"{', '.join(names)})")
    out, n, first = {}, None, None
    for spec in model.inputs:
        if spec.name not in arrays:
            raise InputMissing(f"{where}: no data for input '{spec.name}'", spec.name)
        if only is not None and spec.name not in only:
            continue
        try:
            a = as_array(arrays[spec.name], f"{where}: input '{spec.name}'")
        except ValueError as e:
            raise DataError(str(e)) from None
        want = "(N" + "".join(f", {s}" for s in spec.shape) + (",)" if not spec.shape else ")")
        if a.ndim != 1 + len(spec.shape) or a.shape[1:] != spec.shape:
            raise DataError(f"{where}: input '{spec.name}' must have shape {want}, got "
                            f"{a.shape}")
        if a.dtype.kind not in "biuf":
            raise DataError(f"{where}: input '{spec.name}' must hold numbers, got dtype "
                            f"{a.dtype}")
        if n is None:
            n, first = a.shape[0], spec.name
        elif a.shape[0] != n:
            raise DataError(f"{where}: inputs have different numbers of samples: "
                            f"'{first}' has {n}, '{spec.name}' has {a.shape[0]}")
        if a.dtype.kind == "f":
            # (the column names only for an error message: an input of 10,000 elements
            # has 10,000 of them)
            if finite or spec.is_int:
                _check_finite(a, spec, _columns(spec), where, lambda r: f"{row} {r}",
                              _real_limit(model))
            if spec.is_int:
                _check_int(a, spec, _columns(spec), where, lambda r: f"{row} {r}")
        elif spec.is_int and a.dtype.kind == "u" and a.dtype.itemsize == 8:
            # (a uint64 beyond int64 would wrap to a negative index in the conversion)
            _check_int(a, spec, _columns(spec), where, lambda r: f"{row} {r}")
        out[spec.name] = np.ascontiguousarray(a, dtype=np.int64) if spec.is_int else a
    if n == 0:
        raise DataError(f"{where}: no samples")
    return out


def check_finite(arrays: dict, model, where: str = "data", row: str = "sample") -> None:
    """The NaN and infinity check of check_arrays(finite=False), on its result (or a
    copy of it with the same rows): a DataError naming `where`, the row (`row` r,
    counted from 0) and the column."""
    for spec in model.inputs:
        a = arrays[spec.name]
        if a.dtype.kind == "f" and not spec.is_int:
            _check_finite(a, spec, _columns(spec), where, lambda r: f"{row} {r}",
                          _real_limit(model))


def _columns(spec):
    # (the column names only for an error message: an input of 10,000 elements has
    # 10,000 of them)
    return _Lazy(lambda: [c[0] for c in column_names(spec)])


# a number as numpy.loadtxt reads one: ASCII digits with an optional sign, point and
# exponent, or a spelling of NaN or infinity (read, then refused as not finite)
NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)",
                    re.ASCII | re.IGNORECASE)


def _is_number(text: str) -> bool:
    return NUMBER.fullmatch(text) is not None


def _reads_as_float(text: str) -> bool:
    """What float() accepts: NUMBER, and also digits of other scripts and 1_000."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_csv(path, model, only=None) -> dict:
    path = pathlib.Path(path)
    rows, lines = [], []     # each row's line number is kept for messages
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for line, row in enumerate(reader, 1):
                if reader.line_num != line:
                    # (a quote left open takes the rest of the file into one cell, and
                    # its rows were lost where that column was not read)
                    raise DataError(f"{path}: line {line}: a quoted cell runs over "
                                    "several lines (is a quote left open?)")
                if row and any(c.strip() for c in row):     # blank lines are skipped
                    rows.append(row)
                    lines.append(line)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (CSV must be UTF-8 text)") from None
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV: {e}") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = None
    # (a first row float() reads is data, so that a cell like 1_0 in it is reported as a
    # bad number rather than the row taken for a header)
    if not all(_reads_as_float(c.strip()) for c in rows[0]):
        header, rows, lines = [c.strip() for c in rows[0]], rows[1:], lines[1:]
        if not rows:
            raise DataError(f"{path}: the file has a header but no rows")
    width = len(header) if header else len(rows[0])
    columns = _layout(path, model, header, width)
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} columns, expected {width} "
                            + ("(as the header has)" if header else "(as the first row has)"))
    if only is not None:
        used, header, columns = _only_columns(header, columns, only)
        if len(used) < width:
            rows = [[row[c] for c in used] for row in rows]
    table = _parse_table(rows)
    if table is None:
        table = _parse_cells(path, rows, lines, header)
    return _inputs_of_table(table, columns, header, path, lambda r: f"row {lines[r]}",
                            _real_limit(model))


def _inputs_of_table(table, columns, header, where, row_text, limit=None) -> dict:
    """Each input's array from a float64 table of samples by columns (`columns`: each
    input's column numbers, from _layout), checked: finite, whole numbers in int
    inputs (row_text(r) names table row r in a message)."""
    out = {}
    for spec, cols in columns:
        block = table[:, cols].reshape((len(table),) + spec.shape)
        names = [_colname(header, c) for c in cols]
        _check_finite(block, spec, names, where, row_text, limit)
        if spec.is_int:
            _check_int(block, spec, names, where, row_text)
            block = block.astype(np.int64)
        out[spec.name] = np.ascontiguousarray(block)
    return out


def is_data_frame(data) -> bool:
    """Whether `data` is a pandas DataFrame (told without importing pandas)."""
    return any(c.__module__.split(".")[0] == "pandas" and c.__name__ == "DataFrame"
               for c in type(data).__mro__)


def frame_arrays(frame, model, where: str = "data", only=None) -> dict:
    """A dict input name -> array from a pandas DataFrame whose column names are a
    CSV header's (y, x.0, x.1, ...; see the module docstring), checked as a CSV is:
    rows are counted from 0, as frame.iloc counts them. With `only`, for those inputs
    alone (module docstring)."""
    header = [str(c).strip() for c in frame.columns]
    if not len(frame):
        raise DataError(f"{where}: the DataFrame has no rows")
    columns = _layout(where, model, header, len(header))
    if only is not None:
        used, header, columns = _only_columns(header, columns, only)
        frame = frame.iloc[:, used]
    for name, dtype in zip(header, frame.dtypes):
        if getattr(dtype, "kind", "O") not in "biuf":
            raise DataError(f"{where}: column '{name}' must hold numbers, got dtype {dtype}")
    try:
        table = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: cannot read the DataFrame as numbers: {e}") from None
    return _inputs_of_table(table, columns, header, where, lambda r: f"row {r}",
                            _real_limit(model))


def _parse_table(rows):
    """The cells as a float64 table, or None if one is not a NUMBER. NumPy parses the
    strings as float() does (fast, and exact); what float() accepts beyond NUMBER (digits
    of other scripts, 1_000) is not ASCII or holds an underscore, so text that is ASCII
    without underscores reads the same either way."""
    body = "".join(itertools.chain.from_iterable(rows))
    if not body.isascii() or "_" in body:
        return None
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        return None


def _parse_cells(path, rows, lines, header):
    """The table cell by cell, or a DataError naming the first cell that is empty or
    not a NUMBER (the slow path, for text _parse_table does not take)."""
    for row, line in zip(rows, lines):
        for c, cell in enumerate(row):
            text = cell.strip()
            if not text:
                raise DataError(f"{path}: row {line}, column '{_colname(header, c)}' is "
                                "empty (a missing value)")
            if not _is_number(text):
                raise DataError(f"{path}: row {line}, column '{_colname(header, c)}': "
                                f"{text!r} is not a number (numbers are ASCII decimals, as "
                                "in 12, -0.5 or 1e-3)")
    return np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)


class _Lazy:
    """A list made on first indexing."""

    def __init__(self, make):
        self.make, self.items = make, None

    def __getitem__(self, k):
        if self.items is None:
            self.items = self.make()
        return self.items[k]


def _check_finite(block, spec, names, path, row_text, limit=None) -> None:
    """NaN or infinity anywhere, or with `limit` (a float32 model's largest number,
    _real_limit) a real input's value beyond it, which the model's dtype would make
    infinite: an error naming the first one's row and column."""
    if not block.size:
        return      # (no rows: nothing to check, and reshape(0, -1) has no answer)
    flat = block.reshape(block.shape[0], -1)
    bounded = limit is not None and not spec.is_int
    # x . x is finite exactly when every element is (no inf - inf among squares; NaN
    # propagates), and at most limit^2 only when every element is within the limit,
    # unless finite squares overflow: then the elementwise check decides. One pass at
    # memory speed, where isfinite also writes a mask and reads it back
    # (docs/training.md has the figures). einsum sums in NumPy's own loop on the
    # calling thread: np.dot would hand the sum to BLAS, whose threads, woken for it,
    # compete with lossc's workers for the cores (milliseconds on a busy machine, even
    # for a few kilobytes).
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->", flat, flat)
        # (compared as Python floats: NumPy would compare a float32 sum in float32,
        # where limit^2 is infinite)
        if (float(squares) <= limit * limit) if bounded else np.isfinite(squares):
            return
        bad = ~np.isfinite(flat)
        if bounded:
            bad |= np.abs(flat) > limit
    if bad.any():
        r, c = np.argwhere(bad)[0]
        v = flat[r, c]
        if np.isfinite(v):
            raise DataError(f"{path}: {row_text(r)}, column '{names[c]}' is {v:g}, beyond "
                            f"float32's range (+-{limit:.4g}); inputs must be finite "
                            "numbers in the model's dtype")
        what = "is NaN (a missing value?)" if np.isnan(v) else f"is {v}"
        raise DataError(f"{path}: {row_text(r)}, column '{names[c]}' {what}; inputs must be "
                        "finite numbers")


def _real_limit(model):
    """The largest number of a float32 model (whose data beyond it would turn
    infinite), None for float64 or a view without a dtype."""
    dtype = getattr(model, "dtype", None)
    return float(np.finfo(np.float32).max) if dtype == np.float32 else None


def _check_int(block, spec, names, path, row_text) -> None:
    """A fraction in an int input, or a value beyond what an index can be: an error
    naming the first one's row and column."""
    if not block.size:
        return      # (as in _check_finite)
    flat = block.reshape(block.shape[0], -1)
    frac = flat != np.round(flat)
    if frac.any():
        r, c = np.argwhere(frac)[0]
        raise DataError(f"{path}: {row_text(r)}, column '{names[c]}': {flat[r, c]:g} is not "
                        f"an integer (input '{spec.name}' is declared int: class labels and "
                        "indices must be whole numbers)")
    huge = np.abs(flat) > 2 ** 62
    if huge.any():
        r, c = np.argwhere(huge)[0]
        raise DataError(f"{path}: {row_text(r)}, column '{names[c]}': {flat[r, c]:g} is too "
                        f"large for an index (input '{spec.name}' is declared int: its "
                        "values must lie within +-2^62)")


def _colname(header, c: int) -> str:
    return header[c] if header else f"#{c + 1}"


def _only_columns(header, columns: list, only) -> tuple:
    """The columns of the inputs named in `only` (from _layout's `columns`): their
    numbers in the file, ascending; the header of a table of them alone (naming them
    as the file does: '#3' for the third column of a file without a header); and
    those inputs' columns numbered in that table."""
    columns = [(s, cols) for s, cols in columns if s.name in only]
    used = sorted(c for _, cols in columns for c in cols)
    position = {c: k for k, c in enumerate(used)}
    return (used, [_colname(header, c) for c in used],
            [(s, [position[c] for c in cols]) for s, cols in columns])


def _layout(path, model, header, ncols: int) -> list:
    """For each input, the column numbers of its elements in row-major order."""
    sizes = [max(1, s.size) for s in model.inputs]
    if header is None:
        need = sum(sizes)
        if ncols != need:
            names = ", ".join(f"{s.name}{list(s.shape) if s.shape else ''}"
                              for s in model.inputs)
            raise (InputMissing if ncols < need else DataError)(
                f"{path}: rows have {ncols} columns, but the inputs ({names}) take "
                f"{need}; give the columns in declaration order, or add a header row "
                "naming them")
        out, c = [], 0
        for s, k in zip(model.inputs, sizes):
            out.append((s, list(range(c, c + k))))
            c += k
        return out
    where = {}
    for c, name in enumerate(header):
        if not name:
            raise DataError(f"{path}: column {c + 1} of the header has no name")
        if name in where:
            raise DataError(f"{path}: column '{name}' appears twice in the header")
        where[name] = c
    used, out = set(), []
    for s in model.inputs:
        cols = []
        for names in _each_column_names(s):
            found = [where[n] for n in names if n in where]
            if len(found) > 1:
                raise DataError(f"{path}: columns {' and '.join(repr(header[f]) for f in found)}"
                                " name the same element")
            if not found:
                hint = f" (one column per element: {names[0]}, ...)" if s.shape else ""
                raise InputMissing(f"{path}: no column '{names[0]}' for input '{s.name}'{hint}"
                                   + _found_and_expected(header, model), s.name)
            cols.append(found[0])
            used.add(found[0])
        out.append((s, cols))
    extra = [header[c] for c in range(len(header)) if c not in used]
    if extra:
        raise DataError(f"{path}: column '{extra[0]}' matches no input of the model"
                        + _found_and_expected(header, model))
    return out


FOUND_MAX = 20      # column names a message lists at most


def _found_and_expected(header, model) -> str:
    """The end of a message: the columns the header has and those the model's inputs
    take (on the same line: an error is one line on the command line)."""
    found = ", ".join(header[:FOUND_MAX])
    if len(header) > FOUND_MAX:
        found += f", ... ({len(header)} in all)"
    expected = ", ".join(_column_span(s) for s in model.inputs)
    return f"; found columns: {found}; expected columns: {expected}"


def _column_span(spec) -> str:
    """An input's columns as a range for messages: x.0 .. x.7, M.0.0 .. M.2.3, y."""
    if not spec.shape:
        return spec.name
    first = "".join(".0" for _ in spec.shape)
    last = "".join(f".{k - 1}" for k in spec.shape)
    return f"{spec.name}{first} .. {spec.name}{last}"
