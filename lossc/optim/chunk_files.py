"""Chunked training data named by a path: a folder or a glob of NPY or Parquet files.

    lossc train model.loss --data data/            # data/x/0.npy, data/y/0.npy, ...
    lossc train model.loss --data 'data/*.parquet' --scheduler local
    lossc.train(model, data="data/x/*.npy")        # a one-input model

NPY files: each file is a chunk of one input, named by the folder it is in (the layout
dask.array.to_npy_stack writes, one folder per input; its `info` file is not read, for
it is a pickle). For a model with one input the folder's name does not matter. Within
a folder the files are taken in natural order (2.npy before 10.npy); every input must
have as many files, and file k of each the same rows. A folder given as --data holds
the inputs' folders (or, for a one-input model, the .npy files themselves) or Parquet
files. Parquet files are read as one dask DataFrame (columns named as a CSV header's).

Without a dask.distributed client the NPY chunks are memory maps read one at a time in
this process (lossc.optim.chunked.LocalChunks: a data set larger than memory streams
from disk); with one, each chunk's task maps its files on the worker it runs on, from
the same paths (a file system the workers share). A file is mapped when its chunk is
used, and checked against the rows its header had when the run was planned. Parquet
always goes through Dask (its default scheduler without a client). Only the files'
headers are read to plan the run.
"""
from __future__ import annotations

import glob
import math
import os
import pathlib
import re

import numpy as np
from numpy.lib import format as npy_format

from lossc.files import not_a_file
from lossc.optim.data import DataError

GLOB_CHARS = "*?["


def is_chunk_path(data) -> bool:
    """Whether data names chunked files: a folder, or a pattern with glob characters."""
    if not isinstance(data, (str, pathlib.Path)):
        return False
    text = str(data)
    if os.path.isfile(text):        # (a file whose name holds a glob character)
        return False
    return os.path.isdir(text) or any(c in text for c in GLOB_CHARS)


def file_chunks(path, model, where: str = "data"):
    """The Chunks (local or Dask) of the files `path` names, checked against the
    model's inputs by their headers."""
    files = _files(str(path), where)
    parquet = [f for f in files if f.suffix == ".parquet"]
    if parquet:
        if len(parquet) != len(files):
            raise DataError(f"{where}: {path} mixes Parquet files with others")
        import dask.dataframe as dd
        from lossc.optim.dask_chunks import dask_chunks
        _check_parquet_columns(parquet, where)
        return dask_chunks(dd.read_parquet([str(f) for f in parquet]), model, where)
    npy = [f for f in files if f.suffix == ".npy"]
    if not npy:
        raise DataError(f"{where}: {path} holds no .npy or .parquet files")
    by_input = _group_by_input(npy, model, where, path)
    shapes = {name: [_npy_header(f, where) for f in fs] for name, fs in by_input.items()}
    sizes = _check_shapes(shapes, model, where)
    from lossc.optim.dask_chunks import active_client
    client = active_client()
    labels = [", ".join(str(fs[c]) for fs in by_input.values()) for c in range(len(sizes))]
    if client is None:
        from lossc.optim.chunked import LocalChunks, NpyFile
        return LocalChunks([{name: NpyFile(str(fs[c]), sizes[c])
                             for name, fs in by_input.items()}
                            for c in range(len(sizes))], labels)
    return _dask_npy(by_input, sizes, client, labels)


def files_named(path, where: str = "data") -> list:
    """The files a folder or glob of chunk files names, in natural order."""
    return _files(str(path), where)


def _files(path: str, where: str) -> list:
    if os.path.isdir(path):
        root = pathlib.Path(path)
        found = sorted(root.glob("*.parquet")) or sorted(root.glob("*.npy")) or \
            sorted(root.glob("*/*.npy"))
    else:
        found = [pathlib.Path(p) for p in glob.glob(path)]
    if not found:
        raise DataError(f"{where}: no files match {path}")
    for f in found:
        # (a pipe, a device, a folder named like a chunk: skipped, its chunk vanished
        # from the count without a word)
        if not f.is_file():
            raise DataError(f"{where}: {f}: {not_a_file(f)}")
    return sorted(found, key=_natural_key)


def _natural_key(path: pathlib.Path):
    """2.npy before 10.npy: the numbers in the name compared as numbers."""
    parts = re.split(r"(\d+)", path.name)
    return (str(path.parent),) + tuple(int(p) if p.isdigit() else p for p in parts)


def _group_by_input(files: list, model, where: str, path) -> dict:
    groups = {}
    for f in files:
        groups.setdefault(f.parent.name, []).append(f)
    names = [s.name for s in model.inputs]
    if len(groups) == 1 and len(names) == 1:
        return {names[0]: next(iter(groups.values()))}
    unknown = [g for g in groups if g not in names]
    if unknown:
        raise DataError(f"{where}: the folder '{unknown[0]}' of {path} is not an input of "
                        f"the model (each input's .npy files go in a folder named as the "
                        f"input: {', '.join(names)})")
    missing = [n for n in names if n not in groups]
    if missing:
        raise DataError(f"{where}: no .npy files for input '{missing[0]}' in {path} (a "
                        f"folder named '{missing[0]}')")
    counts = {n: len(groups[n]) for n in names}
    if len(set(counts.values())) != 1:
        raise DataError(f"{where}: the inputs have different numbers of chunk files: "
                        f"{counts}")
    return {n: groups[n] for n in names}


def _npy_header(path: pathlib.Path, where: str) -> tuple:
    """(shape, dtype) from a .npy file's header, checked against its size."""
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            # (version 3 differs from 2 only in the encoding of field names)
            read = npy_format.read_array_header_1_0 if version == (1, 0) else \
                npy_format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: {path}: not a readable .npy file ({e})") from None
    if dtype.hasobject or fortran:
        what = "objects" if dtype.hasobject else "a Fortran-ordered array"
        raise DataError(f"{where}: {path}: holds {what}; lossc reads C-ordered numbers")
    if offset + math.prod(shape) * dtype.itemsize > size:     # (Python ints: no wrap)
        raise DataError(f"{where}: {path}: the file is shorter than its header says")
    return tuple(shape), dtype


def _check_shapes(shapes: dict, model, where: str) -> tuple:
    """Rows per chunk, after checking each file's shape and dtype against its input."""
    sizes = None
    for spec in model.inputs:
        rows = []
        for shape, dtype in shapes[spec.name]:
            if len(shape) != 1 + len(spec.shape) or shape[1:] != spec.shape:
                raise DataError(f"{where}: input '{spec.name}' needs chunks of shape "
                                f"(N{''.join(f', {s}' for s in spec.shape)}), got {shape}")
            if dtype.kind not in "biuf":
                raise DataError(f"{where}: input '{spec.name}' must hold numbers, got "
                                f"dtype {dtype}")
            rows.append(shape[0])
        if sizes is None:
            sizes = rows
        elif rows != sizes:
            raise DataError(f"{where}: the chunk files of input '{spec.name}' have rows "
                            f"{rows}, those of '{model.inputs[0].name}' {sizes}")
    if not any(sizes):
        raise DataError(f"{where}: the files hold no rows")
    return tuple(sizes)


def _check_parquet_columns(files: list, where: str) -> None:
    """A DataError naming the first file whose columns (read from its footer: no data)
    are not the first file's: the files are read as one DataFrame with the first
    file's columns, and a later file without one of them failed in pandas (KeyError)
    when its partition was computed, while one with another column had it dropped."""
    import pyarrow.parquet as pq
    first = None
    for path in files:
        try:
            schema = pq.read_schema(path)
        except (OSError, ValueError) as e:
            raise DataError(f"{where}: {path}: not a readable Parquet file ({e})") from None
        # (the stored index too, a column or a range: read as one DataFrame, the files'
        # index is the first file's, and one a later file lacks fails in pandas as a
        # missing column does)
        index = [c if isinstance(c, str) else f"{c.get('name') or 'unnamed'} (index)"
                 for c in (schema.pandas_metadata or {}).get("index_columns", [])
                 if isinstance(c, str) or c.get("name")]
        columns = [c for c in schema.names if c not in index] + index
        if first is None:
            first = (path, columns)
            continue
        missing = [c for c in first[1] if c not in columns]
        extra = [c for c in columns if c not in first[1]]
        if missing or extra:
            what = (f"no column '{missing[0]}'" if missing else
                    f"a column '{extra[0]}'")
            raise DataError(f"{where}: {path}: has {what}, unlike {first[0]} (the Parquet "
                            f"files of a data set must have the same columns)")


def _dask_npy(by_input: dict, sizes: tuple, client, labels: list):
    """The files as chunks of Dask tasks, each task reading its chunk's files itself
    (chunked.NpyFile): a chunk is in a worker's memory only while its task runs."""
    from lossc.optim.chunked import NpyFile
    from lossc.optim.dask_chunks import Block, DaskChunks
    blocks = [Block({name: NpyFile(str(files[c].resolve()), sizes[c])
                     for name, files in by_input.items()}) for c in range(len(sizes))]
    keep = [c for c, n in enumerate(sizes) if n]
    return DaskChunks([blocks[c] for c in keep], tuple(sizes[c] for c in keep), client,
                      [labels[c] for c in keep])
