"""Saving and loading trained parameters: .npz (one array per parameter, the default)
or .json ({"name": nested lists}, for reading from other languages)."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from lossc.files import not_a_file, replacing
from lossc.optim.npfiles import load_npz


def params_file(path) -> pathlib.Path:
    """The file save_params writes for `path`: a .json or .npz name as it is, any other
    with .npz appended (what np.savez would do)."""
    path = pathlib.Path(path)
    if path.suffix.lower() in (".json", ".npz"):
        return path
    return path.with_name(path.name + ".npz")


def save_params(path, params: dict) -> pathlib.Path:
    """Write a parameter dict; the format follows the suffix (.json, else .npz). The
    file is replaced in one step: a write that fails leaves the old one as it was."""
    path = params_file(path)
    arrays = {k: np.asarray(v) for k, v in params.items()}
    with replacing(path) as tmp:
        if path.suffix.lower() == ".json":
            # repr-exact floats: json writes the shortest text that reads back the same
            text = json.dumps({k: a.tolist() for k, a in arrays.items()}, indent=1)
            tmp.write_text(text + "\n", encoding="utf-8")
        else:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    return path


def load_params(path, model=None) -> dict:
    """Read parameters written by save_params (or any .npz/.json of the same shape).
    With `model`, check the names and shapes against it and convert to its dtype."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {not_a_file(path)}")
    try:
        params = _read_json(path) if path.suffix.lower() == ".json" else _read_npz(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read parameters: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: cannot read parameters: {e}") from None
    if model is None:
        return params
    want = {p.name: p.shape for p in model.params}
    for k in params:
        if k not in want:
            raise ValueError(f"{path}: '{k}' is not a parameter of the model (parameters: "
                             f"{', '.join(want)})")
    for k, shape in want.items():
        if k not in params:
            raise ValueError(f"{path}: no value for parameter '{k}'")
        if params[k].shape != shape:
            raise ValueError(f"{path}: parameter '{k}' has shape {params[k].shape}, the "
                             f"model's is {shape}")
    return {k: np.asarray(params[k], dtype=model.dtype) for k in want}


def _read_json(path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not a text file (JSON must be UTF-8 text)") from None
    if not isinstance(raw, dict):
        raise ValueError("expected an object {name: array}")
    params = {}
    for k, v in raw.items():
        try:
            params[k] = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError, RecursionError):
            raise ValueError(f"'{k}' is not an array of numbers") from None
    return params


def _read_npz(path) -> dict:
    with open(path, "rb") as f:
        if not f.read(2) == b"PK":
            raise ValueError("not a .npz file (expected one written by lossc train or "
                             "numpy.savez)")
    return load_npz(path)
