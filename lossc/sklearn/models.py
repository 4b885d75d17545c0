"""Compiled models shared by the estimators of one process.

A scikit-learn search clones its estimator for every candidate and every fold; each
clone fits a model compiled from the same source, dims and dtype. The first fit
compiles it (or loads it from lossc's persistent cache); the others take it from here,
keyed by the source text, the dims, the dtype and the compile options, and get a
`copy.copy` of it: a Model of their own (frames, threads, remembered batches) over the
same machine code, which never changes once loaded. Nothing here outlives the process.
"""
from __future__ import annotations

import copy
import threading
from collections import OrderedDict

import lossc
from lossc.options import Options
from lossc.source import Source

MAX_MODELS = 32          # the models kept, the least recently used dropped first

_models: "OrderedDict[tuple, lossc.Model]" = OrderedDict()
_lock = threading.Lock()


def shared_model(source: Source, dims: dict, dtype: str, options: Options) -> "lossc.Model":
    """A Model of `source` compiled with `dims` and `dtype`, compiled at most once per
    process for each (source text, dims, dtype, options)."""
    key = (source.text, tuple(sorted(dims.items())), dtype, options)
    with _lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
    if model is None:
        model = lossc.compile(source, dims=dims, dtype=dtype, options=options)
        with _lock:
            _models[key] = model
            while len(_models) > MAX_MODELS:
                _models.popitem(last=False)
    return copy.copy(model)


def clear() -> None:
    """Forget the models kept (they stay in lossc's persistent cache)."""
    with _lock:
        _models.clear()
