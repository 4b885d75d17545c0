"""Dask collections as training data: each chunk's objective and gradient computed
where the chunk lives (lossc/optim/chunked.py has the arithmetic and its order).

    import dask.array as da
    from distributed import Client
    client = Client("tcp://scheduler:8786")          # or none: Dask's default scheduler
    x = da.from_npy_stack("data/x"); y = da.from_npy_stack("data/y")
    result = lossc.train(model, data={"x": x, "y": y}, optimizer=lossc.LBFGS())

The data: a dict input name -> dask array, chunked along the batch axis only (an input
chunked otherwise, or along the batch axis unlike the first input, is rechunked to the
first input's row chunks: a lazy step of the graph), or a dask DataFrame whose columns
are named as a CSV header's (y, x.0, x.1, ...). Chunk sizes must be known (a dask array
made from a DataFrame without lengths has none: `compute_chunk_sizes()`).

The computation: each chunk's task is followed by a task of lossc's (chunked.py's
leaves) on its result, and those by a tree of additions; the compute returns one
(objective, gradient) pair. With an active dask.distributed client (`Client(...)` in
this process, or `lossc train --scheduler`), the model goes to the workers once a run
(pickled: its source, which each worker compiles or finds in its own compile cache;
runtime/pickled.py) and the tasks run where the scheduler puts them,
next to their chunk; a worker lost mid-compute is replaced and its tasks run again
elsewhere, with the same result (the tree's order does not depend on where); without one, Dask's default scheduler (threads) runs them in this
process. Nothing of Dask is imported until data of Dask's are seen.
"""
from __future__ import annotations

import copy
import math
import sys

from lossc.optim.chunked import ChunkedData, Chunks, add_pairs, tree_sum
from lossc.optim.data import DataError, _layout


def is_dask_collection(obj) -> bool:
    """Whether obj is a Dask collection (told without importing Dask)."""
    return type(obj).__module__.split(".")[0] == "dask"


def is_dask_data(data) -> bool:
    """A dask DataFrame, or a dict with a dask array among its values."""
    if isinstance(data, dict):
        return any(is_dask_collection(v) for v in data.values())
    return is_dask_collection(data)


def active_client():
    """The dask.distributed client of this process, or None. (A process that never
    imported distributed has none: it is not imported here for that.)"""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client
    try:
        return default_client()
    except ValueError:
        return None


class DaskChunks(Chunks):
    """Chunks of a Dask collection: `blocks[c]` a dict input name -> delayed array, or
    a delayed pandas DataFrame, of sizes[c] rows."""

    def __init__(self, blocks: list, sizes: tuple, client=None):
        self.blocks, self.sizes, self.client = blocks, tuple(int(n) for n in sizes), client
        self._models = {}           # id(model) -> (model, its node in the graphs)

    def map_sum(self, leaf, model, args, weights):
        import dask
        ref = self._on_workers(model)
        leaves = [dask.delayed(leaf)(ref, *args, w, block)
                  for w, block in zip(weights, self.blocks)]
        return self._compute(tree_sum(leaves, dask.delayed(add_pairs)))

    def arrays(self, c: int):
        block = self.blocks[c]
        if isinstance(block, dict) and not any(is_dask_collection(v) for v in block.values()):
            return block            # (files this process reads itself: chunked.NpyFile)
        return self._compute(block)

    def _compute(self, value):
        if self.client is not None:
            return self.client.compute(value, sync=True)
        import dask
        return dask.compute(value)[0]

    def _on_workers(self, model):
        """The model as the tasks take it, with one thread (the chunks are the
        parallelism). With a client: a future of a task that rebuilds the model from
        its pickled state on a worker, computed once a run; the workers that need it
        fetch it from there (pickled again: its source), each once. It is the result of
        a task, not scattered data, so a worker lost with it is replaced and the task
        run again (scattered data lost with its workers cannot be recomputed); and it
        is one node the tasks share, not a copy inlined into each task, which each
        task would rebuild."""
        held = self._models.get(id(model))
        if held is None:
            single = copy.copy(model).set_threads(1)
            ref = single
            if self.client is not None:
                import dask

                from lossc.runtime import pickled
                rebuild = single.calls_beyond.rebuild      # (lossc.api.model_from_pickle)
                ref = self.client.compute(dask.delayed(rebuild, pure=True)(
                    pickled.state_of(single)))
            held = self._models[id(model)] = (model, ref)
        return held[1]

    def close(self) -> None:
        for _, ref in self._models.values():
            release = getattr(ref, "release", None)
            if release is not None:
                release()
        self._models.clear()


def dask_chunks(data, model, where: str = "data") -> DaskChunks:
    """DaskChunks of a dict of dask arrays or a dask DataFrame, checked against the
    model's inputs (DataError naming what does not fit)."""
    client = active_client()
    if isinstance(data, dict):
        blocks, sizes = _array_blocks(data, model, where)
    else:
        blocks, sizes = _frame_blocks(data, model, where)
    return DaskChunks(blocks, sizes, client)


def _array_blocks(data: dict, model, where: str):
    names = [s.name for s in model.inputs]
    for k in data:
        if k not in names:
            raise DataError(f"{where}: '{k}' is not an input of the model (inputs: "
                            f"{', '.join(names)})")
    arrays = {}
    for spec in model.inputs:
        if spec.name not in data:
            raise DataError(f"{where}: no data for input '{spec.name}'")
        arrays[spec.name] = _dask_array(data[spec.name], spec, where)
    first = model.inputs[0].name
    rows = arrays[first].chunks[0]
    for name, a in arrays.items():
        if a.shape[0] != arrays[first].shape[0]:
            raise DataError(f"{where}: input '{first}' has {arrays[first].shape[0]} "
                            f"samples, input '{name}' has {a.shape[0]}")
        # every input in the first one's row chunks, whole along its other axes
        want = {0: rows, **{axis: -1 for axis in range(1, a.ndim)}}
        if a.chunks[0] != rows or any(len(c) > 1 for c in a.chunks[1:]):
            arrays[name] = a.rechunk(want)
    delayed = {name: a.to_delayed().reshape(-1) for name, a in arrays.items()}
    blocks = [{name: delayed[name][c] for name in arrays} for c in range(len(rows))]
    return _without_empty(blocks, rows)


def _dask_array(a, spec, where: str):
    """An input as a dask array of the input's shape with known row chunks."""
    import dask.array as da
    if not is_dask_collection(a):
        import numpy as np
        a = da.from_array(np.asarray(a))
    if not isinstance(a, da.Array):
        raise DataError(f"{where}: input '{spec.name}' must be a dask array (or all the "
                        f"data one dask DataFrame), got {type(a).__name__}")
    if any(math.isnan(n) for n in a.chunks[0]):
        raise DataError(f"{where}: input '{spec.name}' has chunks of unknown size; call "
                        "its compute_chunk_sizes() first")
    want = "(N" + "".join(f", {s}" for s in spec.shape) + (",)" if not spec.shape else ")")
    if a.ndim != 1 + len(spec.shape) or tuple(a.shape[1:]) != spec.shape:
        raise DataError(f"{where}: input '{spec.name}' must have shape {want}, got "
                        f"{a.shape}")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{where}: input '{spec.name}' must hold numbers, got dtype "
                        f"{a.dtype}")
    return a


def _frame_blocks(frame, model, where: str):
    header = [str(c).strip() for c in frame.columns]
    _layout(where, model, header, len(header))       # a DataError if it does not fit
    sizes = tuple(int(n) for n in frame.map_partitions(len).compute())
    return _without_empty(list(frame.to_delayed()), sizes)


def _without_empty(blocks: list, sizes) -> tuple[list, tuple]:
    keep = [c for c, n in enumerate(sizes) if n > 0]
    if not keep:
        raise DataError("data: the collection has no rows")
    return [blocks[c] for c in keep], tuple(sizes[c] for c in keep)


def collection_value_and_grad(model, theta: dict, kwargs: dict) -> tuple[float, dict]:
    """Model.value_and_grad on keyword inputs among which are dask arrays: the objective
    and its gradient (a dict in the model's dtype) summed over their chunks."""
    data, hypers = model._split_kwargs(kwargs)
    data = ChunkedData(model, dask_chunks(data, model), hypers)
    try:
        value, grad = data.value_and_grad(model.pack_params(theta))
    finally:
        data.close()
    return value, model.unpack_params(grad)
