"""Saving and loading trained parameters: .npz (one array per parameter, the default)
or .json ({"name": nested lists}, for reading from other languages)."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from lossc.files import replacing


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
        raise ValueError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("expected an object {name: array}")
            params = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
        else:
            with open(path, "rb") as f:
                if not f.read(2) == b"PK":
                    raise ValueError("not a .npz file (expected one written by lossc train "
                                     "or numpy.savez)")
            with np.load(path, allow_pickle=False) as z:
                params = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
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
