"""Pickling a model: its source, dims, dtype and options, never its machine code.

A model goes to other processes (Dask workers, multiprocessing pools, scikit-learn's
joblib) as the state `state_of` gives: the `.loss` source text and the name it was read
under, the dims it was compiled with, the dtype, the vector width and loader asked for,
and its thread settings (a thread count left at the default, one per core the
process may run on, is taken as the unpickling process's default, as a model compiled
there gets; a count from OMP_NUM_THREADS, as one asked for, travels as it is). lossc.api.model_from_pickle checks that state as lossc.load
checks an artifact's recorded source (its size, dims and dtype) and compiles it with
lossc.compile, so the unpickling process runs only code its own compiler made, or finds
in its own compile cache (keyed on the source, as any compilation is). Machine code in
a pickle would be foreign machine code, which a load never runs (README.md,
"Security").
"""
from __future__ import annotations

# what a pickled model holds (a state with any other key is refused)
FIELDS = ("source", "name", "dims", "dtype", "vector_bits", "loader", "threads",
          "min_samples_per_thread")


def state_of(model) -> dict:
    """The pickled state of `model` (a TypeError for a model without source: one made
    by lossc.compile_graph from a graph)."""
    header = model.meta
    source = header.get("source")
    if not isinstance(source, str) or model.calls_beyond is None:
        raise TypeError("this model cannot be pickled: it was compiled from a graph, not "
                        "from source (compile it with lossc.compile to send it to other "
                        "processes)")
    return {"source": source, "name": header.get("name", "<pickled>"),
            "dims": dict(header.get("dims_given") or {}), "dtype": model.dtype.name,
            "vector_bits": model.options.vector_bits, "loader": model.options.loader,
            "threads": None if model.threads_by_default else model.threads,
            "min_samples_per_thread": model.min_samples_per_thread}
