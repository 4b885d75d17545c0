"""Loading training data for a model: CSV, .npy and .npz, checked against its inputs.

CSV with a header names columns by input: a scalar input `y` is column `y`; element j
of a vector input `x` is `x.j` or `x[j]`; element (i, j) of a matrix input `M` is
`M.i.j`, `M[i,j]` or `M[i][j]`. Without a header (the first row is all numbers), the
columns are the inputs' elements in declaration order. A .npz holds one array per input
name; a .npy is the single input of a one-input model.

Every problem is a DataError naming the file, the column and the row (1-based, as an
editor shows them, counting the header).
"""
from __future__ import annotations

import csv
import itertools
import pathlib

import numpy as np


class DataError(ValueError):
    pass


def _column_names(spec) -> list[list[str]]:
    """For each element of an input (row-major), the names its column may have."""
    if not spec.shape:
        return [[spec.name]]
    out = []
    for idx in itertools.product(*map(range, spec.shape)):
        dotted = spec.name + "".join(f".{i}" for i in idx)
        bracket = f"{spec.name}[{','.join(map(str, idx))}]"
        nested = spec.name + "".join(f"[{i}]" for i in idx)
        out.append(list(dict.fromkeys([dotted, bracket, nested])))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_data(path, model) -> dict:
    """A dict input name -> array (batch first) for `model`, from a data file."""
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        return check_arrays(arrays, model, str(path))
    if suffix == ".npy":
        if len(model.inputs) != 1:
            raise DataError(f"{path}: a .npy file holds one array, but the model has inputs "
                            f"{[i.name for i in model.inputs]}; use .npz or .csv")
        return check_arrays({model.inputs[0].name: np.load(path)}, model, str(path))
    return load_csv(path, model)


def check_arrays(arrays: dict, model, where: str) -> dict:
    names = [i.name for i in model.inputs]
    for k in arrays:
        if k not in names:
            raise DataError(f"{where}: array '{k}' is not an input of the model "
                            f"(inputs: {', '.join(names)})")
    out, n = {}, None
    for spec in model.inputs:
        if spec.name not in arrays:
            raise DataError(f"{where}: no array for input '{spec.name}'")
        a = np.asarray(arrays[spec.name])
        if a.shape[1:] != spec.shape:
            raise DataError(f"{where}: input '{spec.name}' must have shape "
                            f"(N, {', '.join(map(str, spec.shape))}), got {a.shape}"
                            if spec.shape else
                            f"{where}: input '{spec.name}' must have shape (N,), got {a.shape}")
        if n is not None and a.shape[0] != n:
            raise DataError(f"{where}: inputs have different numbers of rows ({n} and "
                            f"{a.shape[0]} for '{spec.name}')")
        n = a.shape[0]
        if a.dtype.kind == "f":
            bad = np.argwhere(np.isnan(a))
            if len(bad):
                raise DataError(f"{where}: input '{spec.name}' has NaN at row {bad[0][0]}")
        if spec.is_int and a.dtype.kind == "f":
            frac = np.argwhere(a != np.round(a))
            if len(frac):
                raise DataError(f"{where}: int input '{spec.name}' holds "
                                f"{a[tuple(frac[0])]} at row {frac[0][0]}: class labels must "
                                "be integers")
            a = a.astype(np.int64)
        out[spec.name] = a
    return out


def load_csv(path: pathlib.Path, model) -> dict:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = None
    if not all(_is_number(c.strip()) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{path}: the file has a header but no rows")
    columns = _layout(path, model, header, len(rows[0]))
    first_row = 2 if header else 1
    width = len(header) if header else len(rows[0])
    table = np.empty((len(rows), width))
    for r, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}: row {r + first_row} has {len(row)} columns, expected "
                            f"{width}")
        for c, cell in enumerate(row):
            try:
                table[r, c] = float(cell)
            except ValueError:
                raise DataError(f"{path}: row {r + first_row}, column "
                                f"'{_colname(header, c)}': {cell.strip()!r} is not a number") \
                    from None
    out = {}
    for spec, cols in columns:
        block = table[:, cols]
        for r, c in np.argwhere(np.isnan(block)):
            raise DataError(f"{path}: row {r + first_row}, column "
                            f"'{_colname(header, cols[c])}' is NaN (missing value)")
        if spec.is_int:
            for r, c in np.argwhere(block != np.round(block)):
                raise DataError(f"{path}: row {r + first_row}, column "
                                f"'{_colname(header, cols[c])}': {block[r, c]:g} is not an "
                                f"integer (input '{spec.name}' is an int)")
            block = block.astype(np.int64)
        out[spec.name] = block.reshape((len(rows),) + spec.shape)
    return out


def _colname(header, c: int) -> str:
    return header[c] if header else f"#{c + 1}"


def _layout(path, model, header, ncols: int) -> list:
    """For each input, the column numbers of its elements in row-major order."""
    if header is None:
        need = sum(max(1, s.size) for s in model.inputs)
        if ncols != need:
            names = ", ".join(f"{s.name}{list(s.shape) if s.shape else ''}" for s in model.inputs)
            raise DataError(f"{path}: rows have {ncols} columns, but the inputs ({names}) take "
                            f"{need}; add a header row naming the columns")
        out, c = [], 0
        for s in model.inputs:
            out.append((s, list(range(c, c + max(1, s.size)))))
            c += max(1, s.size)
        return out
    where = {}
    for c, name in enumerate(header):
        if name in where:
            raise DataError(f"{path}: column '{name}' appears twice in the header")
        where[name] = c
    used, out = set(), []
    for s in model.inputs:
        cols = []
        for names in _column_names(s):
            found = [where[n] for n in names if n in where]
            if not found:
                raise DataError(f"{path}: no column for input '{s.name}' (expected a column "
                                f"named '{names[0]}')")
            cols.append(found[0])
            used.add(found[0])
        out.append((s, cols))
    extra = [header[c] for c in range(len(header)) if c not in used]
    if extra:
        raise DataError(f"{path}: column '{extra[0]}' matches no input of the model (inputs: "
                        + ", ".join(s.name for s in model.inputs) + ")")
    return out
