"""Pickling a model: its source, dims, dtype and options, never its machine code.

A model goes to other processes (Dask workers, multiprocessing pools, scikit-learn's
joblib) as the state `state_of` gives: the `.loss` source text and the name it was read
under, the dims it was compiled with, the dtype, the vector width and loader asked for,
and its thread settings. `rebuild` checks that state as lossc.load checks an artifact's
recorded source (its size, dims and dtype) and compiles it with lossc.compile, so the
unpickling process runs only code its own compiler made, or finds in its own compile
cache (keyed on the source, as any compilation is). Machine code in a pickle would be
foreign machine code, which a load never runs (README.md, "Security").
"""
from __future__ import annotations

import dataclasses

from lossc.options import LOADERS, VECTOR_BITS, Options

# what a pickled model holds (a state with any other key is refused)
FIELDS = ("source", "name", "dims", "dtype", "vector_bits", "loader", "threads",
          "min_samples_per_thread")


def state_of(model) -> dict:
    """The pickled state of `model` (a TypeError for a model without source: one made
    by lossc.compile_graph from a graph)."""
    header = model.meta
    source = header.get("source")
    if not isinstance(source, str):
        raise TypeError("this model cannot be pickled: it was compiled from a graph, not "
                        "from source (compile it with lossc.compile to send it to other "
                        "processes)")
    return {"source": source, "name": header.get("name", "<pickled>"),
            "dims": dict(header.get("dims_given") or {}), "dtype": model.dtype.name,
            "vector_bits": model.options.vector_bits, "loader": model.options.loader,
            "threads": model.threads,
            "min_samples_per_thread": model.min_samples_per_thread}


def rebuild(state):
    """The model a pickled state describes, compiled here (or taken from this
    process's compile cache); a ValueError for a state that is not one state_of made."""
    from lossc.api import compile, normalize_dims
    from lossc.compiler import DTYPES
    from lossc.source import MAX_SOURCE_BYTES, Source
    if not isinstance(state, dict) or set(state) != set(FIELDS):
        raise ValueError("not the pickled state of a lossc model (its fields are "
                         f"{list(FIELDS)})")
    source, name = state["source"], state["name"]
    if not isinstance(source, str) or len(source.encode()) > MAX_SOURCE_BYTES:
        raise ValueError("a pickled lossc model's source must be text of at most "
                         f"{MAX_SOURCE_BYTES} bytes")
    if not isinstance(name, str):
        raise ValueError("a pickled lossc model's name must be text")
    if state["dtype"] not in DTYPES:
        raise ValueError(f"a pickled lossc model's dtype must be one of {DTYPES}, got "
                         f"{state['dtype']!r}")
    bits, loader = state["vector_bits"], state["loader"]
    if bits is not None and bits not in VECTOR_BITS or loader not in LOADERS:
        raise ValueError("a pickled lossc model's vector width or loader is not one "
                         "lossc uses")
    if not isinstance(state["dims"], dict):
        raise ValueError("a pickled lossc model's dims must be a dict")
    dims = normalize_dims(state["dims"])
    # the cache folder and the rest are this process's own
    options = dataclasses.replace(Options.from_env(), vector_bits=bits, loader=loader)
    model = compile(Source(source, name), dims, state["dtype"], options=options)
    return model.set_threads(state["threads"], state["min_samples_per_thread"])
