"""W10: training on data larger than a worker's memory, with Dask.

W2's model at D = 16 on N = 9.6M samples: 1.2 GB of float64 features written as an NPY
stack in a temporary folder (x/0.npy .. x/15.npy and y/..., chunks of 600,000 rows,
76.8 MB each), a LocalCluster of 2 worker processes with one thread and a 500 MB memory
limit each. The workers read the chunks from the files each pass (the data do not fit
in their memory together); the client gets (objective, gradient) pairs only.

- full-batch L-BFGS through `lossc.train(model, data=FOLDER, optimizer=LBFGS(),
  tol_grad=1e-8)` on the cluster against the same in memory in this process: the
  objectives reached, to 1e-9 relative; each worker's peak resident memory (VmHWM, read
  from /proc at the end: the pids unchanged, so no worker was restarted) under its limit;
- one epoch of mini-batch Adam over the partitions (lossc.optim.chunked.PartitionSteps:
  the partitions visited in a seeded order, each streamed to this process) within 1e-3
  (relative) of that optimum;
- the distributed gradient's throughput per worker core against one in-process thread
  on chunks of the same size: a chunk of 600,000 rows (77 MB) persisted in each worker's
  memory, each pass taking its gradient PASSES_PER_CHUNK times (16 leaves, as a pass
  over the stack has; the target: at least 70%), and, as a figure, a pass over the
  whole stack read from the files (the page cache) each time; then where a pass's time
  goes: the workers' tasks timed on the workers, one worker's task alone, and Dask's
  round trip with tasks that do nothing.

--quick: N = 1.2M in chunks of 150,000 (the targets indicative only).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np

N, CHUNK, D = 9_600_000, 600_000, 16
QUICK_N, QUICK_CHUNK = 1_200_000, 150_000
MEMORY_LIMIT = 500 * 10 ** 6
OPTIMUM_RTOL = 1e-9
ADAM_RTOL = 1e-3
THROUGHPUT_SHARE = 0.7
PASSES_PER_CHUNK = 8       # a persisted chunk's gradient taken this often a compute
SRC = """\
dim D = 16
input x[D]
input y
param w[D]
param b
hyper lam = 1e-3
z = dot(w, x) + b
loss = softplus(z) - y * z
penalty = lam * sum(w ^ 2)
"""
NOTE = ("W10: W2's model (D = 16, its L2 term as a penalty) on an NPY stack in a "
        "temporary folder, a LocalCluster of 2 worker processes (1 thread, 500 MB memory "
        "limit each); L-BFGS to a gradient 2-norm of 1e-8 on the cluster and in memory; "
        "Adam lr 1e-3, batch 256, one epoch; worker memory is each worker's peak resident "
        "set (VmHWM). The throughput target compares chunks persisted in the workers' "
        "memory (chunks 0 and 1 of the stack, read by a task each, one on each worker; "
        "the cluster's gradient per worker core) with one in-process thread on a chunk of "
        "the same size, the two timed in turns; the stack's row, read from the page cache "
        "every pass, is a figure. The indented rows split the persisted pass: the "
        "workers' tasks timed on the workers, one worker's task alone; the no-op row is "
        "Dask's round trip for the pass's shape.")


def write_stack(folder: str, n: int, chunk: int, seed: int = 10) -> None:
    """The features and labels chunk by chunk (never the whole set in memory)."""
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(D) / 2
    for name in ("x", "y"):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for k, lo in enumerate(range(0, n, chunk)):
        rows = min(chunk, n - lo)
        X = rng.standard_normal((rows, D))
        y = (rng.random(rows) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float64)
        np.save(os.path.join(folder, "x", f"{k}.npy"), X)
        np.save(os.path.join(folder, "y", f"{k}.npy"), y)


def read_stack(folder: str) -> dict:
    import glob
    out = {}
    for name in ("x", "y"):
        files = sorted(glob.glob(os.path.join(folder, name, "*.npy")),
                       key=lambda p: int(os.path.basename(p)[:-4]))
        out[name] = np.concatenate([np.load(f) for f in files])
    return out


def peak_rss(pid: int) -> int:
    """A process's peak resident set size in bytes (VmHWM), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(ctx) -> None:
    from benchmarks.harness import Row, fmt_time
    try:
        import dask.array as da
        from distributed import Client, LocalCluster
    except ImportError:
        ctx.na("W10", "dask", "lossc.train on a LocalCluster", "Dask not installed "
               "(pip install 'lossc[dask]')")
        return
    import lossc
    from lossc.optim import LBFGS, Adam
    from benchmarks.common import compile_model
    n, chunk = (QUICK_N, QUICK_CHUNK) if ctx.quick else (N, CHUNK)
    case = f"N={n:,}, D={D}, chunks of {chunk:,}"
    ctx.log(f"W10 {case}")
    ctx.notes.append(NOTE)
    folder = tempfile.mkdtemp(prefix="lossc-w10-")
    try:
        with ctx.all_cores():
            write_stack(folder, n, chunk)
            m = compile_model(SRC)
            data = read_stack(folder)
            t = time.perf_counter()
            ref = lossc.train(m, data=data, optimizer=LBFGS(), tol_grad=1e-8, steps=500)
            t_ref = time.perf_counter() - t
            ctx.rows.append(Row("W10", case, "L-BFGS in memory (this process)", seconds=t_ref,
                                ref=True, note=f"{ref.steps} iterations, objective "
                                               f"{ref.best_loss:.12g}"))
            one = np.ascontiguousarray(data["x"][:chunk]), np.ascontiguousarray(data["y"][:chunk])
            del data
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              memory_limit=MEMORY_LIMIT, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                pids = client.run(os.getpid)
                t = time.perf_counter()
                res = lossc.train(m, data=folder, optimizer=LBFGS(), tol_grad=1e-8, steps=500)
                t_dist = time.perf_counter() - t
                gap = abs(res.best_loss - ref.best_loss) / abs(ref.best_loss)
                ctx.rows.append(Row("W10", case, "L-BFGS on the cluster (files)",
                                    seconds=t_dist, check=f"rel {gap:.1e}",
                                    note=f"{res.steps} iterations ({res.stopped})"))
                ctx.target("W10 L-BFGS on the cluster reaches the in-memory optimum",
                           f"{gap:.1e}", f"<= {OPTIMUM_RTOL:g} rel", gap <= OPTIMUM_RTOL,
                           f"{res.best_loss:.12g} vs {ref.best_loss:.12g}",
                           anchor=("W10", case, "L-BFGS on the cluster (files)"))
                t = time.perf_counter()
                adam = lossc.train(m, data=folder, optimizer=Adam(lr=1e-3), epochs=1,
                                   batch_size=256, seed=0)
                t_adam = time.perf_counter() - t
                adam_gap = (adam.history[-1] - ref.best_loss) / abs(ref.best_loss)
                ctx.rows.append(Row("W10", case, "Adam, one epoch over the partitions",
                                    seconds=t_adam, note=f"{adam.steps} steps, objective "
                                                         f"{adam.history[-1]:.9g}"))
                ctx.target("W10 one epoch of Adam within 1e-3 of the optimum",
                           f"{adam_gap:.1e}", f"<= {ADAM_RTOL:g} rel", adam_gap <= ADAM_RTOL,
                           anchor=("W10", case, "Adam, one epoch over the partitions"))
                still = client.run(os.getpid)
                peaks = {w: peak_rss(p) for w, p in pids.items()}
                throughput(ctx, case, m, folder, one, client, da)
            restarted = sorted(set(pids.values()) ^ set(still.values()))
            worst = max(peaks.values())
            ctx.target("W10 no worker over its memory limit",
                       f"{worst / 1e6:.0f} MB peak", f"< {MEMORY_LIMIT / 1e6:.0f} MB each",
                       worst < MEMORY_LIMIT and not restarted and worst > 0,
                       "peaks " + ", ".join(f"{v / 1e6:.0f} MB" for v in peaks.values())
                       + (f"; restarted: {restarted}" if restarted else ""))
            ctx.log(f"  L-BFGS {fmt_time(t_ref)} in memory, {fmt_time(t_dist)} on the "
                    f"cluster (gap {gap:.1e}); Adam {fmt_time(t_adam)} (gap {adam_gap:.1e}); "
                    f"worker peaks {[round(v / 1e6) for v in peaks.values()]} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def throughput(ctx, case, m, folder, one, client, da) -> None:
    """Rows per second of the gradient: one in-process thread on a chunk; the cluster
    per worker core on chunks held in the workers' memory (chunks 0 and 1 of the stack,
    one a worker, each taken PASSES_PER_CHUNK times a pass), and over the stack read
    from its files; then where a pass's time goes (breakdown)."""
    from benchmarks.harness import Row
    from lossc.optim.chunked import ChunkedData
    from lossc.optim.dask_chunks import dask_chunks
    X, y = one
    rows = len(y)
    theta = np.zeros(m.n_params)
    single = m.__copy__().set_threads(1)
    bound = single.bind({"x": X, "y": y})
    grad = np.zeros(m.n_params)

    def in_process():
        single.value_and_grad_flat(theta, bound, grad_out=grad)
    dx, dy, placed = persisted_pair(client, folder, rows, da)
    chunks = dask_chunks({"x": dx, "y": dy}, m)
    chunks.blocks, chunks.sizes, chunks.labels = (chunks.blocks * PASSES_PER_CHUNK,
                                                  chunks.sizes * PASSES_PER_CHUNK,
                                                  chunks.labels * PASSES_PER_CHUNK)
    persisted = ChunkedData(m, chunks)
    stack = ChunkedData(m, _folder_chunks(m, folder))
    passes = {"persisted in the workers": persisted, "read from the files each pass": stack}
    for data in passes.values():
        data.value_and_grad(theta)          # (the workers' model compiled or loaded)
    # taken in turns (this process's thread, then each pass), so that the load of a
    # shared machine falls on them alike
    times = {"in process": [], **{label: [] for label in passes}}
    for _ in range(7):
        for label, call in (("in process", in_process),
                            *((k, lambda d=d: d.value_and_grad(theta))
                              for k, d in passes.items())):
            t = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - t)
    t_local = float(np.median(times["in process"]))
    local_rate = rows / t_local
    ctx.rows.append(Row("W10", case, "gradient, one thread in process", seconds=t_local,
                        gbytes=X.nbytes / 1e9, note=f"{rows:,} rows ({X.nbytes / 1e6:.0f} MB)"))
    for label, data in passes.items():
        target = data is persisted
        seconds = float(np.median(times[label]))
        share = data.B / seconds / 2 / local_rate
        impl = f"gradient on the cluster, {label}"
        ctx.rows.append(Row("W10", case, impl, seconds=seconds,
                            gbytes=data.B * D * 8 / 1e9,
                            note=f"{data.B:,} rows in {len(data.sizes)} chunks; per worker "
                                 f"core {share:.0%} of one in-process thread"
                                 + ("" if not target else f"; {placed}")))
        if target:
            ctx.target("W10 cluster gradient per worker core / in process",
                       f"{share:.0%}", f">= {THROUGHPUT_SHARE:.0%}", share >= THROUGHPUT_SHARE,
                       f"chunks of {X.nbytes / 1e6:.0f} MB", anchor=("W10", case, impl))
            breakdown(ctx, case, m, theta, chunks, client, local_rate)
        data.close()
    round_trip(ctx, case, client)


def persisted_pair(client, folder, rows, da):
    """Chunks 0 and 1 of the stack as dask arrays persisted in the workers' memory, each
    read by a task of its own (the scheduler spreads them over the idle workers), and
    where they went."""
    import dask
    from distributed import futures_of, wait

    def pair(name, shape):
        return da.concatenate([da.from_delayed(
            dask.delayed(np.load)(os.path.join(folder, name, f"{k}.npy")),
            shape=shape, dtype=np.float64) for k in (0, 1)])
    dx, dy = client.persist([pair("x", (rows, D)), pair("y", (rows,))])
    wait([dx, dy])
    holders = client.who_has(futures_of(dx))
    spread = len({w for ws in holders.values() for w in ws})
    return dx, dy, f"x's chunks on {spread} worker{'s' if spread > 1 else ''}"


def timed_leaves(*args):
    """lossc.optim.dask_chunks.leaves, and the seconds it took on its worker."""
    from lossc.optim.dask_chunks import leaves
    t = time.perf_counter()
    leaves(*args)
    return time.perf_counter() - t


def breakdown(ctx, case, m, theta, chunks, client, local_rate) -> None:
    """Where a pass over the persisted chunks goes: the workers' own compute in it (the
    same tasks a pass submits, timed on the workers), and one worker's tasks alone
    (with its own core to itself, as the in-process thread has)."""
    from benchmarks.harness import Row
    from lossc.optim.chunked import chunk_value_and_grad
    ref = chunks._on_workers(m)
    groups, _, _ = chunks._plan()
    weights = [1.0 / len(chunks.sizes)] * len(chunks.sizes)

    def submit(group):
        return client.submit(timed_leaves, chunk_value_and_grad, ref, (theta, {}),
                             [weights[c] for c in group],
                             [chunks.blocks[c].held for c in group],
                             [chunks.labels[c] for c in group], pure=False)
    together, alone = [], []
    for _ in range(5):
        together.append(max(client.gather([submit(g) for g in groups])))
        alone.append(submit(groups[0]).result())
    t_tasks, t_alone = float(np.median(together)), float(np.median(alone))
    rows_each = sum(chunks.sizes) / len(groups)
    ctx.rows.append(Row("W10", case, "  of which the workers' tasks (the longest, timed on "
                        "its worker)", seconds=t_tasks,
                        note=f"{len(groups)} tasks, one a worker, computing together; per "
                             f"worker core {rows_each / t_tasks / local_rate:.0%} of one "
                             "in-process thread"))
    ctx.rows.append(Row("W10", case, "  one worker's task alone, the other idle",
                        seconds=t_alone,
                        note=f"{rows_each:,.0f} rows; {rows_each / t_alone / local_rate:.0%} of "
                             "one in-process thread"))


def no_op(*args):
    return 0.0, np.zeros(1)


def round_trip(ctx, case, client) -> None:
    """The pass's shape (a task on each worker, submitted and gathered) with tasks that
    do nothing: Dask's own cost of a pass, which the gradient's share above includes."""
    from benchmarks.harness import Row
    workers = list(client.scheduler_info()["workers"])
    times = []
    for _ in range(5):
        t = time.perf_counter()
        client.gather([client.submit(no_op, w, pure=False, workers=[w]) for w in workers])
        times.append(time.perf_counter() - t)
    ctx.rows.append(Row("W10", case, f"Dask alone: a no-op task on each of the "
                        f"{len(workers)} workers", seconds=float(np.median(times)),
                        note="the scheduler's round trip, in every pass on the cluster"))


def _folder_chunks(m, folder):
    from lossc.optim.chunk_files import file_chunks
    return file_chunks(folder, m)
