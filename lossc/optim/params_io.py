"""Saving and loading trained parameters: .npz (one array per parameter, the default)
or .json ({"name": nested lists}, for reading from other languages).

A file saved with its model (`save_params(path, params, model=m, hypers=...)`, as
`lossc train` saves) also records what the parameters were trained with: the model's
name, the hash of its source, its dims, its dtype and the hyperparameters of the run
(`TrainedWith`). The record is one more entry, RECORD_KEY: in a .npz a 0-d string array
holding JSON, in a .json an object. `trained_with(path)` reads it (None for a file
without one, as files saved before it existed are); `load_params` skips it.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from lossc.files import not_a_file, replacing, written_in_place
from lossc.optim.npfiles import load_npz, save_npz

RECORD_KEY = "__lossc__"     # (not a name a parameter can have)


@dataclass(frozen=True)
class TrainedWith:
    """What a parameters file records of the model and run that made it."""

    name: str                # the model's file name
    source_sha256: str       # the hash of its source text
    dims: dict               # every dim, as the model was compiled
    dtype: str               # float64 or float32
    hypers: dict             # every hyperparameter's value in the run

    @classmethod
    def of(cls, model, hypers: Optional[dict] = None) -> "TrainedWith":
        """The record for parameters of `model` trained with `hypers` (the others at
        their defaults)."""
        values = {h.name: _plain(h.default) for h in model.hypers}
        unknown = [k for k in (hypers or {}) if k not in values]
        if unknown:
            raise ValueError(f"hypers: '{unknown[0]}' is not a hyperparameter of the model"
                             + (f" (hyperparameters: {', '.join(values)})" if values else
                                " (it has none)"))
        values.update({k: _plain(v) for k, v in (hypers or {}).items()})
        meta = model.meta
        return cls(pathlib.Path(str(meta.get("name", ""))).name,
                   str(meta.get("source_sha256", "")),
                   {k: int(v) for k, v in meta.get("dims", {}).items()},
                   model.dtype.name, values)

    @classmethod
    def from_json(cls, raw) -> "TrainedWith":
        if not isinstance(raw, dict):
            raise ValueError(f"its '{RECORD_KEY}' record is not an object")
        try:
            dims, hypers = dict(raw["dims"]), dict(raw["hypers"])
            return cls(str(raw["name"]), str(raw["source_sha256"]),
                       {str(k): _recorded_dim(k, v) for k, v in dims.items()},
                       _recorded_dtype(raw["dtype"]),
                       {str(k): _recorded_hyper(k, v) for k, v in hypers.items()})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"its '{RECORD_KEY}' record is malformed ({e})") from None

    def dims_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.dims.items()) or "no dims"

    def mismatch(self, model) -> Optional[str]:
        """What differs between this record's dims and dtype and the model's, as
        'dims D=8, float64 ... the model has D=4, float64', or, for the same source,
        between the hyperparameters it names and the model's; None if nothing."""
        here = TrainedWith.of(model)
        if here.dims == self.dims and here.dtype == self.dtype:
            if self.source_sha256 == here.source_sha256 and set(self.hypers) != set(
                    here.hypers):
                # (lossc records every hyper; the same source with others: an edit)
                return (f"the record's hyperparameters ({', '.join(self.hypers) or 'none'})"
                        f" are not the model's ({', '.join(here.hypers) or 'none'})")
            return None
        return (f"trained with {self.dims_text()}, {self.dtype}; the model here has "
                f"{here.dims_text()}, {here.dtype}")


def _recorded_dtype(v) -> str:
    """A dtype as a record holds it: one a model is compiled in."""
    if v not in ("float64", "float32"):
        raise ValueError(f"dtype is {v!r}; lossc compiles float64 or float32")
    return v


def _recorded_dim(name, v) -> int:
    """A dim as a record holds it: a JSON integer from 1 to 2^63 - 1 (what the command
    line accepts; not a bool, not a float to be truncated)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < 2 ** 63:
        raise ValueError(f"dim '{name}' is {v!r}; a dim is a positive integer")
    return v


def _recorded_hyper(name, v):
    """A hyperparameter's value as a record holds it: a finite number, or nested lists
    of them (what --hyper and hypers= accept; not a bool, NaN or an infinity)."""
    items = v if isinstance(v, list) else [v]
    for item in items:
        if isinstance(item, list):
            _recorded_hyper(name, item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)) \
                or not np.isfinite(item):
            raise ValueError(f"hyper '{name}' holds {item!r}; a hyperparameter is a "
                             "finite number")
    return v


def _plain(v):
    """A hyperparameter's value as JSON holds it (a number, or nested lists)."""
    a = np.asarray(v)
    return a.item() if a.shape == () else a.tolist()


def params_file(path) -> pathlib.Path:
    """The file save_params writes for `path`: a .json or .npz name as it is, any other
    with .npz appended (what np.savez would do), unless it names a device or a pipe."""
    path = pathlib.Path(path)
    if path.suffix.lower() in (".json", ".npz") or written_in_place(path):
        return path
    return path.with_name(path.name + ".npz")


def save_params(path, params: dict, *, model=None, hypers: Optional[dict] = None
                ) -> pathlib.Path:
    """Write a parameter dict; the format follows the suffix (.json, else .npz). With
    `model`, the file also records the model's name, source hash, dims and dtype and
    the run's `hypers` (the others at the model's defaults): `lossc eval` then uses
    them. The file is replaced in one step: a write that fails leaves the old one as
    it was."""
    path = params_file(path)
    if RECORD_KEY in params:
        raise ValueError(f"params: '{RECORD_KEY}' is not a parameter name")
    if hypers and model is None:
        raise ValueError("save_params: hypers= is recorded with the model's dims and "
                         "dtype; pass model= too")
    record = asdict(TrainedWith.of(model, hypers)) if model is not None else None
    arrays = {k: np.asarray(v) for k, v in params.items()}
    with replacing(path) as tmp:
        if path.suffix.lower() == ".json":
            out = {k: a.tolist() for k, a in arrays.items()}
            if record is not None:
                out[RECORD_KEY] = record
            # repr-exact floats: json writes the shortest text that reads back the same
            text = json.dumps(out, indent=1)
            tmp.write_text(text + "\n", encoding="utf-8")
        else:
            if record is not None:
                arrays[RECORD_KEY] = np.array(json.dumps(record))
            with open(tmp, "wb") as f:
                save_npz(f, arrays)
    return path


def trained_with(path) -> Optional[TrainedWith]:
    """The record of what the parameters in `path` were trained with, or None for a
    file without one (saved without its model, or by an older lossc)."""
    path = pathlib.Path(path)
    raw = _read(path, record=True)
    if raw is None:
        return None
    try:
        return TrainedWith.from_json(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_params(path, model=None) -> dict:
    """Read parameters written by save_params (or any .npz/.json of the same shape).
    With `model`, check the names and shapes against it and convert to its dtype."""
    path = pathlib.Path(path)
    params = _read(path)
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
        if params[k].dtype.kind not in "biuf":     # (complex would lose its imaginary part)
            raise ValueError(f"{path}: parameter '{k}' must hold real numbers, got dtype "
                             f"{params[k].dtype}")
    out = {}
    for k in want:
        with np.errstate(over="ignore"):
            out[k] = np.asarray(params[k], dtype=model.dtype)
        bad = ~np.isfinite(out[k])
        if bad.any():
            # (a NaN start trains nothing, and its NaN parameters were written out)
            at = np.unravel_index(int(np.argmax(bad)), out[k].shape)
            raw = np.asarray(params[k])[at].item()
            what = "NaN" if raw != raw else (
                "infinite" if not np.isfinite(raw) else f"{raw:g}, beyond {model.dtype}'s range")
            where = f"[{', '.join(map(str, at))}]" if out[k].shape else ""
            raise ValueError(f"{path}: parameter '{k}{where}' is {what}; parameters must "
                             "be finite numbers")
    return out


def _read(path: pathlib.Path, record: bool = False):
    """The parameters in path (a dict of arrays), or with record=True its record (None
    if it has none); a ValueError naming the file for a file that cannot be read."""
    if not path.is_file():
        raise ValueError(f"{path}: {not_a_file(path)}")
    try:
        if path.suffix.lower() == ".json":
            return _read_json(path, record)
        return _read_npz(path, record)
    except OSError as e:
        raise ValueError(f"{path}: cannot read parameters: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: cannot read parameters: {e}") from None


def _no_duplicate_keys(pairs):
    """json's object_pairs_hook: an object whose name appears twice is an error (json
    would keep the last silently)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"'{k}' appears twice in one JSON object")
        out[k] = v
    return out


def _read_json(path, record: bool = False):
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not a text file (JSON must be UTF-8 text)") from None
    if not isinstance(raw, dict):
        raise ValueError("expected an object {name: array}")
    if record:
        return raw.get(RECORD_KEY)
    params = {}
    for k, v in raw.items():
        if k == RECORD_KEY:
            continue
        # (np.asarray would read true as 1 and "1.5" as 1.5)
        if not _numbers_only(v):
            raise ValueError(f"'{k}' is not an array of numbers")
        try:
            params[k] = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError, RecursionError):
            raise ValueError(f"'{k}' is not an array of numbers") from None
        except OverflowError:
            raise ValueError(f"'{k}' holds a number beyond float64's range") from None
    return params


def _numbers_only(value) -> bool:
    """Whether a JSON value is a number or nested lists of them (no true or false, no
    strings, no null)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
    return True


def _read_npz(path, record: bool = False):
    with open(path, "rb") as f:
        if not f.read(2) == b"PK":
            raise ValueError("not a .npz file (expected one written by lossc train or "
                             "numpy.savez)")
    arrays = load_npz(path)
    text = arrays.pop(RECORD_KEY, None)
    if not record:
        return arrays
    if text is None:
        return None
    try:
        return json.loads(str(text), object_pairs_hook=_no_duplicate_keys)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"its '{RECORD_KEY}' record is not JSON") from None
