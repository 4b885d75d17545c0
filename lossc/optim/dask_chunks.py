"""Dask collections as training data: each chunk's objective and gradient computed
where the chunk lives (lossc/optim/chunked.py has the arithmetic and its order).

    import dask.array as da
    from distributed import Client
    client = Client("tcp://scheduler:8786")          # or none: Dask's default scheduler
    x = da.from_npy_stack("data/x"); y = da.from_npy_stack("data/y")
    result = lossc.train(model, data={"x": x, "y": y}, optimizer=lossc.LBFGS())

The data: a dict input name -> dask array, chunked along the batch axis only (an input
chunked otherwise, or along the batch axis unlike the first input given as a dask
array, is rechunked to that input's row chunks: a lazy step of the graph), or a dask
DataFrame whose columns are named as a CSV header's (y, x.0, x.1, ...). Chunk sizes
must be known (a dask array made from a DataFrame without lengths has none:
`compute_chunk_sizes()`).

The computation: each chunk's (objective, gradient) pair is computed where the chunk
is, and the pairs come back to this process, which adds them in the fixed tree
(chunked.tree_sum): the same additions, in the same order, wherever and whenever the
pairs were computed. With an active dask.distributed client (`Client(...)` in this
process, or `lossc train --scheduler`):

- chunks persisted in the workers' memory (`client.persist`) go in one task a worker,
  which computes each of its chunks in turn (grouped by the worker holding them when
  the run first asks; the scheduler runs each task where its chunks are): one
  scheduler round trip a pass, not one a chunk;
- chunk files (lossc/optim/chunk_files.py) go one task a chunk, on any worker;
- chunks still to compute (a graph: files read by Dask, rechunking, ...) one task a
  chunk, which the scheduler runs next to the chunk's own tasks.

The model goes to the workers once a run (pickled: its source, which each worker
compiles or finds in its own compile cache; runtime/pickled.py). A worker lost
mid-compute is replaced and its tasks run again elsewhere, with the same result.
Without a client, Dask's default scheduler (threads) computes the pairs in this
process. Nothing of Dask is imported until data of Dask's are seen.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass

from lossc.optim.chunked import ChunkedData, Chunks, add_pairs, row_labels, tree_sum
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


@dataclass(frozen=True)
class Block:
    """One chunk of a Dask collection. `task`: a dict input name -> delayed array (or
    chunked.NpyFile), or a delayed pandas DataFrame. `held`: the same with the futures
    of the cluster's persisted pieces in place of the delayed ones, when the whole chunk
    is persisted (None otherwise), and `sizes` their bytes, which tell on which worker
    the chunk mostly lives."""

    task: object
    held: object = None
    sizes: tuple = ()

    def pieces(self) -> list:
        """The futures the chunk is held as."""
        return list(self.held.values()) if isinstance(self.held, dict) else [self.held]


class DaskChunks(Chunks):
    """Chunks of a Dask collection: `blocks[c]` a Block of sizes[c] rows."""

    def __init__(self, blocks: list, sizes: tuple, client=None, labels=None):
        self.blocks, self.sizes, self.client = blocks, tuple(int(n) for n in sizes), client
        self.labels = list(labels or row_labels(self.sizes))
        self._models = {}           # id(model) -> (model, its node in the graphs)
        self._groups = None         # persisted chunks grouped by worker (_plan)

    def map_sum(self, leaf, model, args, weights, where="data"):
        # Each chunk's pair comes back on its own and the tree is summed here, in the
        # fixed order: the same additions a tree of tasks would make, without a task
        # (and a scheduler round trip) for each of them.
        ref = self._on_workers(model)
        labels = [f"{where}: {label}" for label in self.labels]
        if self.client is None:
            import dask
            results = dask.compute(*[dask.delayed(leaf)(ref, *args, w, b.task, label)
                                     for w, b, label in zip(weights, self.blocks, labels)])
        else:
            results = self._on_cluster(leaf, ref, args, weights, labels)
        return tree_sum(list(results), add_pairs)

    def _on_cluster(self, leaf, ref, args, weights, labels) -> list:
        """Each chunk's leaf result, computed on the cluster, in chunk order. Chunks
        persisted on a worker are computed there, all of a worker's in one task (one
        scheduler round trip a worker, not one a chunk); chunk files one task each, on
        any worker; chunks still to compute (a graph) one task each, after their
        chunk's own tasks."""
        client = self.client
        groups, files, graphs = self._plan()
        jobs = []           # (future, the chunks whose results it returns)
        for group in groups:
            # (no worker named: the scheduler runs a task where most of the bytes it
            # depends on are, which is the group's worker while it holds them)
            jobs.append((client.submit(
                leaves, leaf, ref, args, [weights[c] for c in group],
                [self.blocks[c].held for c in group], [labels[c] for c in group],
                pure=False), group))
        for c in files:
            jobs.append((client.submit(leaves, leaf, ref, args, [weights[c]],
                                       [self.blocks[c].task], [labels[c]], pure=False), [c]))
        if graphs:
            import dask
            computed = client.compute([dask.delayed(leaves)(
                leaf, ref, args, [weights[c]], [self.blocks[c].task], [labels[c]])
                for c in graphs])
            jobs.extend((f, [c]) for f, c in zip(computed, graphs))
        results = [None] * len(self.blocks)
        for group, pairs in zip([g for _, g in jobs], client.gather([f for f, _ in jobs])):
            for c, pair in zip(group, pairs):
                results[c] = pair
        return results

    def _plan(self) -> tuple[list, list, list]:
        """The chunks by how they are computed: persisted ones in groups, one a worker
        (the worker holding most of their bytes when first asked: the scheduler is
        asked once a run, for each of its round trips costs as much as a task's), chunk
        files, and chunks of a graph."""
        files = [c for c, b in enumerate(self.blocks)
                 if b.held is None and not _has_dask(b.task)]
        graphs = [c for c, b in enumerate(self.blocks)
                  if b.held is None and _has_dask(b.task)]
        if self._groups is None:
            held = [c for c, b in enumerate(self.blocks) if b.held is not None]
            by_home = {}
            if held:
                who = self.client.who_has([f for c in held for f in self.blocks[c].pieces()])
                for c in held:
                    by_home.setdefault(_home(self.blocks[c], who), []).append(c)
            self._groups = list(by_home.values())
        return self._groups, files, graphs

    def subset(self, indexes):
        return DaskChunks([self.blocks[c] for c in indexes],
                          tuple(self.sizes[c] for c in indexes), self.client,
                          [self.labels[c] for c in indexes])

    def arrays(self, c: int):
        block = self.blocks[c].task
        if not _has_dask(block):
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


def leaves(leaf, model, args: tuple, weights: list, chunks: list, labels: list) -> list:
    """leaf(model, *args, weight, chunk, label) of each chunk in turn, in one task: a
    worker's chunks computed where they are, their results returned apart (the tree's
    sums are the client's: the order must not depend on which worker holds what)."""
    return [leaf(model, *args, w, chunk, label)
            for w, chunk, label in zip(weights, chunks, labels)]


def _has_dask(block) -> bool:
    if isinstance(block, dict):
        return any(is_dask_collection(v) for v in block.values())
    return is_dask_collection(block)


def _home(block: Block, who: dict):
    """The worker holding most of a persisted chunk's bytes (None: none holds it)."""
    load = {}
    for future, nbytes in zip(block.pieces(), block.sizes):
        for worker in who.get(future.key, ()):
            load[worker] = load.get(worker, 0) + nbytes
    return max(sorted(load), key=load.get) if load else None


def dask_chunks(data, model, where: str = "data") -> DaskChunks:
    """DaskChunks of a dict of dask arrays or a dask DataFrame, checked against the
    model's inputs (DataError naming what does not fit)."""
    client = active_client()
    if isinstance(data, dict):
        blocks, sizes, labels = _array_blocks(data, model, where, client)
    else:
        blocks, sizes, labels = _frame_blocks(data, model, where, client)
    return DaskChunks(blocks, sizes, client, labels)


def _array_blocks(data: dict, model, where: str, client):
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
    # the row chunks of the first input given as a dask array (a NumPy array among them
    # is one chunk: taking its would compute the whole data set as one task)
    dask_given = [s.name for s in model.inputs if is_dask_collection(data[s.name])]
    first = (dask_given or [model.inputs[0].name])[0]
    rows = arrays[first].chunks[0]
    for name, a in arrays.items():
        if a.shape[0] != arrays[first].shape[0]:
            raise DataError(f"{where}: input '{first}' has {arrays[first].shape[0]} "
                            f"samples, input '{name}' has {a.shape[0]}")
        # every input in those row chunks, whole along its other axes
        want = {0: rows, **{axis: -1 for axis in range(1, a.ndim)}}
        if a.chunks[0] != rows or any(len(c) > 1 for c in a.chunks[1:]):
            arrays[name] = a.rechunk(want)
    delayed = {name: a.to_delayed().reshape(-1) for name, a in arrays.items()}
    held = {name: _persisted(a, client) for name, a in arrays.items()}
    blocks = []
    for c, n in enumerate(rows):
        task = {name: delayed[name][c] for name in arrays}
        if all(futures is not None for futures in held.values()):
            blocks.append(Block(task, {name: held[name][c] for name in arrays},
                                tuple(n * a.itemsize * math.prod(a.shape[1:])
                                      for a in arrays.values())))
        else:
            blocks.append(Block(task))
    return _without_empty(blocks, rows, where=where)


def _persisted(collection, client):
    """The futures of a collection's blocks in order (one a row block) when the cluster
    holds every block as it is (persisted, not rechunked since), else None."""
    if client is None:
        return None
    from dask.core import flatten
    from distributed import futures_of
    futures = {f.key: f for f in futures_of(collection)}
    if not futures:
        return None
    graph = collection.__dask_graph__()
    held = [_future_of(k, graph, futures) for k in flatten(collection.__dask_keys__())]
    return None if not held or any(f is None for f in held) else held


def _future_of(key, graph, futures):
    """The future a collection's key stands for: the key's own, or, through the
    aliases a persisted DataFrame's graph names its partitions by, its target's."""
    for _ in range(len(graph) + 1):
        if key in futures:
            return futures[key]
        dependencies = getattr(graph.get(key), "dependencies", ())
        if type(graph.get(key)).__name__ != "Alias" or len(dependencies) != 1:
            return None
        key = next(iter(dependencies))
    return None


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


def _frame_blocks(frame, model, where: str, client):
    header = [str(c).strip() for c in frame.columns]
    _layout(where, model, header, len(header))       # a DataError if it does not fit
    sizes = tuple(int(n) for n in frame.map_partitions(len).compute())
    held = _persisted(frame, client)
    tasks = list(frame.to_delayed())
    blocks = [Block(t) if held is None else Block(t, held[c], (1,))
              for c, t in enumerate(tasks)]
    return _without_empty(blocks, sizes, row_labels(sizes, "partition"), where)


def _without_empty(blocks: list, sizes, labels=None,
                   where: str = "data") -> tuple[list, tuple, list]:
    """The blocks with rows, their sizes and labels (numbered as in the collection)."""
    labels = labels or row_labels(sizes)
    keep = [c for c, n in enumerate(sizes) if n > 0]
    if not keep:
        raise DataError(f"{where}: the collection has no rows")
    return ([blocks[c] for c in keep], tuple(sizes[c] for c in keep),
            [labels[c] for c in keep])


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


def dask_setup(worker) -> None:
    """A worker of `lossc train --scheduler local` (its preload): SIGINT ignored. A
    Ctrl-C at the terminal reaches every process of the group; the lossc process
    handles it and closes the cluster, which ends the workers, and a worker's own
    KeyboardInterrupt would print its tracebacks first."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
