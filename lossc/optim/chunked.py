"""Training data held as row blocks (chunks): on disk, in memory maps, or in a Dask
collection on a cluster.

    data = in_chunks({"x": np.load("x.npy", mmap_mode="r"), "y": y}, rows=600_000)
    result = lossc.train(model, data=data, optimizer=LBFGS())

A `Chunks` is the rows of a data set cut into chunks along the batch axis, each a dict
input name -> array (or a pandas DataFrame with columns named as a CSV header's). Its
one operation is `map_sum(leaf, ...)`: a function of each chunk, evaluated where the
chunk is, and the results summed in a fixed tree (`tree_sum`). Two kinds:

- LocalChunks (here): the chunks are read in this process, one at a time, in order
  (memory maps and NPY files: the data set may be larger than memory; only a chunk is
  resident at a time, and clean pages of a memory map are the system's to drop);
- DaskChunks (lossc/optim/dask_chunks.py): each chunk's function runs where the chunk
  is, on the active dask.distributed client (a worker's persisted chunks in one task)
  or Dask's default scheduler; the model goes to the workers pickled (its source:
  runtime/pickled.py), and only (objective, gradient) pairs travel back, to be summed
  here.

`ChunkedData` is a Chunks bound to a model and its hypers, as a BoundArgs is for
arrays: what lossc.optim.objectives asks of the training set. Its objective is the
in-memory one, up to the order of the sums:

- each chunk's objective and gradient come from the model's own native call on that
  chunk (the chunk's mean, or sum, with the penalty once);
- under `reduce mean` a chunk's result is weighted by its share of the rows (n_c / N),
  so the weighted sum is the mean over all rows, the penalty counting once (the weights
  add up to 1); under `reduce sum` the chunks add up and the penalty, counted once per
  chunk, is taken away C - 1 times (the penalty alone is the objective of an empty
  batch), as the model's own threads combine their chunks (runtime/callpaths.py);
- the sum is a tree in a fixed order: level by level, chunk 2i and 2i + 1 added (an odd
  last one carried up as it is), so a result depends on the chunking alone, never on
  where or when a chunk was computed; results are float64 whatever the model's dtype.

Mini-batch training over chunks (`PartitionSteps`): each epoch visits the chunks (the
partitions) in an order drawn from the seed, and takes the usual mini-batch steps
within each, its rows shuffled from the run's generator; a partition's rows are read
into this process one partition at a time and go through the in-process steps (the
native fused steps where the optimizer has them). This is SGD over a restricted
shuffle (the batches never mix partitions); with partitions made without regard to the
rows' order it converges to what in-memory SGD converges to, the minimizer of the full
objective for a small enough rate. With one partition the run is the in-memory run bit
for bit (the same generator draws the same permutations).
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from lossc.optim.config import PARTITION_STREAM, SPLIT_STREAM, stream_rng
from lossc.optim.data import (DataError, check_arrays, check_finite, frame_arrays,
                               is_data_frame)
from lossc.pairwise import pairwise
from lossc.runtime.calls import IndexOutOfRange


def tree_sum(items: Sequence, add: Callable):
    """The sum of `items` in lossc's fixed tree (lossc/pairwise.py: level by level,
    items 2i and 2i + 1 added, add(left, right), an odd last item carried up)."""
    return pairwise(items, add)


def add_pairs(a: tuple, b: tuple) -> tuple:
    """(value, vector) + (value, vector)."""
    return a[0] + b[0], a[1] + b[1]


# ---------------------------------------------------------------- leaves (on each chunk)
# Module functions: a Dask worker finds them by name in its own lossc.

@dataclass(frozen=True)
class NpyFile:
    """A chunk of one input in a .npy file of `rows` rows (as the run was planned),
    mapped where and when the chunk is used, in this process or in a Dask task, and
    let go after: the native code reads the file's pages as it goes (from the page
    cache, without a copy), one chunk's files are mapped at a time (a map holds a file
    descriptor), and nothing of it outlives its use. Each use checks the file against
    the plan first: a file rewritten with other rows, or cut short, is a DataError
    naming it (mapped from the plan on, a file cut short between two uses killed the
    process with SIGBUS when its missing pages were touched). A file cut short while
    its own chunk is being computed still would: chunk files must not change during a
    run."""

    path: str
    rows: int

    def __len__(self) -> int:
        return self.rows

    def load(self) -> np.ndarray:
        try:
            # (np.load checks the file holds what its header says before mapping it)
            a = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"{self.path}: {e}") from None
        if a.ndim == 0 or len(a) != self.rows:
            raise DataError(f"{self.path}: the file changed during the run: it holds "
                            f"{len(a) if a.ndim else 'no'} rows where it held {self.rows}")
        return a


def chunk_arrays(model, chunk, where: str = "chunk", only=None) -> dict:
    """A chunk (a dict of arrays or NpyFiles, or a pandas DataFrame) as the model's
    checked inputs; with `only`, those inputs alone (the others' arrays present, but
    neither read nor checked: data.py's docstring)."""
    if is_data_frame(chunk):
        return frame_arrays(chunk, model, where, only)
    chunk = {k: v.load() if isinstance(v, NpyFile) and (only is None or k in only) else v
             for k, v in chunk.items()}
    return check_arrays(chunk, model, where, finite=False, only=only, row="row")


def chunk_value_and_grad(model, theta, hypers: dict, weight: float, chunk,
                         where: str = "chunk") -> tuple:
    """weight * (objective, gradient) of the model on one chunk, in float64; a
    DataError naming `where` (the chunk), the row and the column if the result is not
    finite because the chunk holds a NaN or an infinity."""
    arrays = chunk_arrays(model, chunk, where)
    bound = model.bind(arrays, hypers)
    try:
        value, grad = model.checked_value_and_grad_flat(theta, bound)
    except IndexOutOfRange as e:
        raise DataError(e.in_chunk(where)) from None
    if not (np.isfinite(value) and np.isfinite(grad).all()):
        check_chunk_finite(model, arrays, where)
    return weight * float(value), weight * grad.astype(np.float64)


def chunk_hvp(model, theta, v, hypers: dict, weight: float, chunk,
              where: str = "chunk") -> tuple:
    """(0.0, weight * H v) of the model's objective on one chunk, in float64 (a
    DataError for a NaN or infinity in the chunk, as chunk_value_and_grad)."""
    arrays = chunk_arrays(model, chunk, where)
    try:
        hv = model.hvp_flat(theta, v, data=model.bind(arrays, hypers))
    except IndexOutOfRange as e:
        raise DataError(e.in_chunk(where)) from None
    if not np.isfinite(hv).all():
        check_chunk_finite(model, arrays, where)
    return 0.0, weight * hv.astype(np.float64)


def check_chunk_finite(model, arrays: dict, where: str) -> None:
    """A DataError for the first NaN or infinity in a chunk's inputs, naming the chunk
    (`where`), the row in it and the column (which names the input). Run only when a
    chunk's result is not finite: data are not scanned on every pass, and finite data
    whose result is not finite are left to the run to report (divergence)."""
    check_finite(arrays, model, where, row="row")


# ---------------------------------------------------------------- the data as chunks

class Chunks:
    """Row blocks of a data set (see the module docstring). `sizes`: rows per chunk;
    `labels`: what a message calls each chunk (its files, or its rows in the data)."""

    sizes: tuple
    labels: list

    @property
    def n_samples(self) -> int:
        return int(sum(self.sizes))

    def map_sum(self, leaf: Callable, model, args: tuple, weights: Sequence[float],
                where: str = "data"):
        """tree_sum of leaf(model, *args, weights[c], chunk c, label c) over the chunks,
        label c naming chunk c in `where` (the data's name in messages)."""
        raise NotImplementedError          # pragma: no cover

    def arrays(self, c: int) -> dict:
        """Chunk c, read into this process (a dict of arrays or a DataFrame)."""
        raise NotImplementedError          # pragma: no cover

    def subset(self, indexes: Sequence[int]) -> "Chunks":
        """The chunks `indexes` (in that order), as Chunks of the same kind."""
        raise NotImplementedError          # pragma: no cover

    def close(self) -> None:
        """Give back what the run held (the model on the workers)."""


def row_labels(sizes: Sequence[int], what: str = "chunk") -> list:
    """Chunks named by their rows in the data: "chunk 2 (rows 200 to 299)"."""
    ends = np.cumsum(sizes)
    return [f"{what} {c} (rows {end - n} to {end - 1})" for c, (n, end) in
            enumerate(zip(sizes, ends.tolist()))]


def held_out(chunks: Chunks, validation: float, seed: int) -> tuple[Chunks, Chunks]:
    """(training, validation) chunks: round(validation * C) whole chunks held out
    (at least one, and one left to train on), drawn from the seed by a generator of
    their own ([seed, 1], as an in-memory split's rows), the rest kept in order. Whole
    chunks, so that no chunk is read or computed twice and the held-out rows never
    reach the training passes."""
    count = len(chunks.sizes)
    if count < 2:
        raise DataError(f"validation={validation} holds out whole chunks of chunked data, "
                        f"and the data have {count} chunk; give more chunks, or a "
                        "validation set of its own (val_data=)")
    n_val = min(count - 1, max(1, int(round(validation * count))))
    held = set(stream_rng(seed, SPLIT_STREAM).permutation(count)[:n_val].tolist())
    return (chunks.subset([c for c in range(count) if c not in held]),
            chunks.subset(sorted(held)))


class LocalChunks(Chunks):
    """Chunks read in this process, one at a time: `parts` is a list of dicts input name
    -> array-like (a memory map's rows are read when a chunk is used) or NpyFile (the
    file is mapped then)."""

    def __init__(self, parts: Sequence[dict], labels: Optional[Sequence[str]] = None):
        labels = list(labels or row_labels([len(next(iter(p.values()))) for p in parts]))
        keep = [c for c, p in enumerate(parts) if len(next(iter(p.values())))]  # (rows)
        self.parts, self.labels = [parts[c] for c in keep], [labels[c] for c in keep]
        if not self.parts:
            raise DataError("data: the chunks hold no rows")
        self.sizes = tuple(len(next(iter(p.values()))) for p in self.parts)
        self._single = {}          # id(model) -> (model, its one-thread copy)

    def map_sum(self, leaf, model, args, weights, where="data"):
        # (one chunk resident at a time: each leaf's result is summed before the next
        # chunk is read, in tree_sum's order, kept as a stack of partial sums; each on
        # one thread, as a Dask task computes it, so that the numbers do not depend on
        # the model's thread count nor on where the chunks are computed)
        single = self._one_thread(model)
        return _streamed_tree_sum(
            (leaf(single, *args, w, self.arrays(c), f"{where}: {self.labels[c]}")
             for c, w in enumerate(weights)), len(self.parts), add_pairs)

    def _one_thread(self, model):
        held = self._single.get(id(model))
        if held is None or held[0] is not model:
            held = self._single[id(model)] = (model, copy.copy(model).set_threads(1))
        return held[1]

    def arrays(self, c: int) -> dict:
        """Chunk c's arrays, an NpyFile as it is: chunk_arrays maps the files of the
        inputs it reads (a prediction reads only those its outputs need)."""
        return {k: a if isinstance(a, NpyFile) else np.asarray(a)
                for k, a in self.parts[c].items()}

    def subset(self, indexes):
        return LocalChunks([self.parts[c] for c in indexes],
                           [self.labels[c] for c in indexes])


def _streamed_tree_sum(results, n: int, add):
    """tree_sum of the n items `results` yields, taking them one at a time: the same
    sums in the same order, holding at most log2(n) partial sums."""
    # Item c joins the tree as a leaf; two subtrees of equal height merge as soon as
    # both are complete, which is the order tree_sum adds them in. An odd item left at
    # the end of a level is carried up: at the end, the remaining partial sums (of
    # decreasing heights) are added from the smallest, as tree_sum's carried items are.
    stack = []          # (height, partial sum), heights decreasing
    for item in results:
        height, total = 0, item
        while stack and stack[-1][0] == height:
            total = add(stack.pop()[1], total)
            height += 1
        stack.append((height, total))
    if len(stack) == 0 or n == 0:
        raise ValueError("tree_sum of nothing")
    _, total = stack.pop()
    while stack:
        total = add(stack.pop()[1], total)
    return total


def in_chunks(data: dict, rows: int) -> LocalChunks:
    """A dict input name -> array (a memory map from np.load(mmap_mode="r"), say) as
    chunks of `rows` rows (the last holding the remainder), read one at a time."""
    if not isinstance(data, dict) or not data:
        raise TypeError("in_chunks takes a dict input name -> array")
    if not isinstance(rows, numbers.Integral) or isinstance(rows, (bool, np.bool_)) \
            or rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    rows = int(rows)
    for k, a in data.items():
        if np.ndim(a) == 0:
            raise DataError(f"data: input '{k}' must be an array of samples (a row "
                            f"each), got a 0-d {type(a).__name__}")
    lengths = {k: len(a) for k, a in data.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"data: the inputs' rows disagree: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataError("data: the arrays have no rows")
    return LocalChunks([{k: a[lo:lo + rows] for k, a in data.items()}
                        for lo in range(0, n, rows)])


# ---------------------------------------------------------------- bound to a model

class ChunkedData:
    """Chunks bound to a model and its hypers: the training (or validation) set of a
    run, as lossc.optim.objectives uses it (module docstring)."""

    chunked = True

    def __init__(self, model, chunks: Chunks, hypers: Optional[dict] = None,
                 where: str = "data"):
        self.model, self.chunks, self.where = model, chunks, where
        self.hypers = dict(hypers or {})
        model._hyper_vector(self.hypers)         # (a wrong name: a ValueError now)
        self.sizes = chunks.sizes
        self.B = chunks.n_samples
        mean = model.reduce == "mean"
        self.weights = [n / self.B if mean else 1.0 for n in self.sizes]
        self.extra_penalties = (len(self.sizes) - 1
                                if model.reduce == "sum" and model.signature.penalty else 0)

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective over every row and its gradient (float64), at flat theta."""
        theta = np.ascontiguousarray(theta, dtype=self.model.dtype)
        value, grad = self.chunks.map_sum(chunk_value_and_grad, self.model,
                                          (theta, self.hypers), self.weights, self.where)
        if self.extra_penalties:
            p, gp = self._penalty(theta)
            value -= self.extra_penalties * p
            grad = grad - self.extra_penalties * gp
        return value, grad

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """H v of the objective over every row (float64), at flat theta."""
        m = self.model
        theta = np.ascontiguousarray(theta, dtype=m.dtype)
        v = np.ascontiguousarray(v, dtype=m.dtype)
        _, hv = self.chunks.map_sum(chunk_hvp, m, (theta, v, self.hypers), self.weights,
                                    self.where)
        if self.extra_penalties:
            empty = self._empty_batch()
            hv = hv - self.extra_penalties * m.hvp_flat(theta, v, data=empty).astype(
                np.float64)
        return hv

    def _empty_batch(self):
        from lossc.runtime.calls import BoundArgs
        m = self.model
        arrays = [np.zeros((0,) + s.shape, np.int64 if s.is_int else m.dtype)
                  for s in m.inputs]
        return BoundArgs(m, arrays, 0, m._hyper_vector(self.hypers))

    def _penalty(self, theta) -> tuple[float, np.ndarray]:
        """The penalty alone and its gradient: the objective of an empty batch under
        `reduce sum` (its per-sample terms count 0 times)."""
        m = self.model
        grad = np.zeros(m.n_params, dtype=m.dtype)
        value, _ = m.value_and_grad_flat(theta, self._empty_batch(), grad_out=grad)
        return float(value), grad.astype(np.float64)

    def close(self) -> None:
        self.chunks.close()


# ---------------------------------------------------------------- mini-batch epochs

class PartitionSteps:
    """Mini-batch epochs over chunked data (module docstring): the stepper of
    lossc.optim.stepper for a ChunkedData training set. `shuffler` is the run's (each
    partition's row order is its next permutation); the partitions' order comes from a
    generator of its own, seeded from the run's seed, so that one partition leaves the
    run's draws as an in-memory run makes them. batch_steps(bound) gives the stepper of
    an in-memory run on a partition's bound rows (NativeBatchSteps or PythonBatchSteps),
    whose state goes back to the optimizer at the end of the partition (its sync)."""

    orders_itself = True        # the driver passes order=None (lossc.optim.driver)

    def __init__(self, model, data: ChunkedData, bs: int, shuffler, shuffle: bool,
                 seed: int, batch_steps: Callable):
        self.model, self.data, self.bs = model, data, bs
        self.shuffler, self.shuffle = shuffler, shuffle
        self.partition_rng = stream_rng(seed, PARTITION_STREAM)
        self.batch_steps = batch_steps

    @staticmethod
    def steps_per_epoch(sizes, bs: int) -> int:
        return sum(math.ceil(n / bs) for n in sizes)

    def epoch(self, theta, order, count, log):
        sizes = self.data.sizes
        visits = (self.partition_rng.permutation(len(sizes)) if self.shuffle
                  and len(sizes) > 1 else range(len(sizes)))
        for c in visits:
            if count <= 0:
                break
            n = sizes[c]
            steps = min(count, math.ceil(n / self.bs))
            self._partition(theta, c, steps, log)
            count -= steps
        return None

    def _partition(self, theta, c: int, steps: int, log) -> None:
        """`steps` mini-batch steps over partition c, read into this process."""
        m = self.model
        arrays = chunk_arrays(m, self.data.chunks.arrays(c), f"partition {c}")
        bound = m.bind(arrays, self.data.hypers)      # (in the model's dtype, contiguous)
        order = (self.shuffler.permutation(bound.B) if self.shuffle
                 else np.arange(bound.B))
        steps_ = self.batch_steps(bound)
        try:
            steps_.epoch(theta, order, steps, log)
        except IndexOutOfRange as e:
            raise DataError(e.in_chunk(f"data: {self.data.chunks.labels[c]}")) from None
        finally:
            steps_.sync()           # the optimizer's state, for the next partition

    def sync(self) -> None:
        pass
