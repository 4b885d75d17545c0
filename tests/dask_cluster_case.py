"""Run by tests/test_dask.py in a process of its own (a hang guard's timeout around
it): a LocalCluster of two worker processes trains on dask arrays; prints the figures
the tests compare, as JSON, on its last line.

    python tests/dask_cluster_case.py FLAG_FILE
"""
import json
import os
import sys

import numpy as np

SOURCE = ("dim D = 4\ninput x[D]\ninput y\nparam w[D] = normal(0, 0.3)\nparam b\n"
          "hyper lam = 0.05\nz = dot(w, x) + b\nloss = softplus(z) - y * z\n"
          "penalty = lam * sum(w ^ 2)\n")
ROWS, CHUNK = 2000, 250


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, 4))
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-X @ [1.0, -2.0, 0.5, 0.0]))).astype(float)
    return {"x": X, "y": y}


def kill_once(block, flag):
    """The identity, except that the first call anywhere ends its worker process (as
    a machine lost mid-run would): Dask's nanny starts a new worker and the scheduler
    runs the task again."""
    if block.size:                  # (not on Dask's empty probes of the function)
        try:            # (O_EXCL: of two workers at once, one creates the flag)
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return block
        os._exit(1)
    return block


def persisted_runs(client, m, arrays, kw):
    """Training on collections persisted in the workers' memory: dask arrays and a
    DataFrame; and the tasks one gradient evaluation on the arrays runs, by name."""
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd
    from distributed import get_task_stream, wait
    from dask.utils import key_split

    from lossc.optim import LBFGS
    from lossc.optim.chunked import ChunkedData
    from lossc.optim.dask_chunks import dask_chunks
    dx = da.from_array(arrays["x"], chunks=(CHUNK, 4))
    dy = da.from_array(arrays["y"], chunks=CHUNK)
    frame = pd.DataFrame({"y": arrays["y"],
                          **{f"x.{j}": arrays["x"][:, j] for j in range(4)}})
    ddf = dd.from_pandas(frame, npartitions=ROWS // CHUNK)
    dx, dy, ddf = client.persist([dx, dy, ddf])
    wait([dx, dy, ddf])
    out = {}
    r = lossc_train(m, {"x": dx, "y": dy}, LBFGS(), kw)
    out["lbfgs_persisted"] = [r.history, flat(m, r.last_params)]
    r = lossc_train(m, ddf, LBFGS(), kw)
    out["lbfgs_persisted_frame"] = [r.history, flat(m, r.last_params)]
    bad = arrays["x"].copy()
    bad[3 * CHUNK + 7, 1] = np.nan
    try:
        lossc_train(m, {"x": client.persist(da.from_array(bad, chunks=(CHUNK, 4))),
                        "y": dy}, LBFGS(), kw)
        out["nan"] = "no error"
    except Exception as e:          # (the worker's DataError, raised here)
        out["nan"] = f"{type(e).__name__}: {e}"
    data = ChunkedData(m, dask_chunks({"x": dx, "y": dy}, m))
    frame_chunks = dask_chunks(ddf, m)
    out["frame_held"] = all(b.held is not None for b in frame_chunks.blocks)
    try:
        theta = m.pack_params(m.init_params(0))
        data.value_and_grad(theta)          # (the model reaches the workers)
        with get_task_stream(client) as stream:
            data.value_and_grad(theta)
        names = sorted(key_split(t["key"]) for t in stream.data)
        out["pass_tasks"] = names
        out["chunks"] = len(data.sizes)
        # the workers holding the chunks' rows of x, most of each chunk's bytes (a
        # worker running a task copies there the labels y it lacks, so y's pieces may
        # be on both workers after a pass, whichever worker held them first)
        out["holders"] = len({w for ws in client.who_has([dx]).values() for w in ws})
    finally:
        data.close()
    return out


def lossc_train(m, data, optimizer, kw):
    import lossc
    return lossc.train(m, data=data, optimizer=optimizer, **kw)


def flat(model, params):
    return model.pack_params(params).tolist()


def command_line(address, folder, arrays):
    """`lossc train --data FOLDER --scheduler ADDRESS` on the arrays as NPY chunk files,
    and the same without --scheduler: (exit status, output, the two parameter files
    equal)."""
    from click.testing import CliRunner

    from lossc.cli import main as cli
    from lossc.optim.params_io import load_params
    import lossc
    for name, a in arrays.items():
        os.makedirs(os.path.join(folder, "stack", name))
        for k, lo in enumerate(range(0, ROWS, CHUNK)):
            np.save(os.path.join(folder, "stack", name, f"{k}.npy"), a[lo:lo + CHUNK])
    model_file = os.path.join(folder, "m.loss")
    with open(model_file, "w") as f:
        f.write(SOURCE)
    runs = []
    for extra in (["--scheduler", address], []):
        out = os.path.join(folder, f"p{len(runs)}.npz")
        r = CliRunner().invoke(cli, ["train", model_file, "--data",
                                     os.path.join(folder, "stack"), "--optimizer", "lbfgs",
                                     "--epochs", "4", "--out", out] + extra)
        runs.append((r.exit_code, r.output))
    m = lossc.compile(SOURCE)
    same = all(np.array_equal(a, b) for a, b in zip(
        m.pack_params(load_params(os.path.join(folder, "p0.npz"), m)),
        m.pack_params(load_params(os.path.join(folder, "p1.npz"), m))))
    return runs[0][0], runs[0][1], runs[1][0], bool(same)


def main(flag):
    import dask.array as da
    from distributed import Client, LocalCluster

    import lossc
    from lossc.optim import LBFGS
    from lossc.optim.chunked import in_chunks
    m = lossc.compile(SOURCE)
    arrays = data()
    out = {}
    kw = dict(epochs=4, hypers={"lam": 0.1})
    r = lossc.train(m, data=arrays, optimizer=LBFGS(), **kw)
    out["lbfgs_memory"] = [r.history, flat(m, r.last_params)]
    r = lossc.train(m, data=in_chunks(arrays, CHUNK), optimizer=LBFGS(), **kw)
    out["lbfgs_local"] = [r.history, flat(m, r.last_params)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dx = da.from_array(arrays["x"], chunks=(CHUNK, 4))
        dy = da.from_array(arrays["y"], chunks=CHUNK)
        r = lossc.train(m, data={"x": dx, "y": dy}, optimizer=LBFGS(), **kw)
        out["lbfgs_cluster"] = [r.history, flat(m, r.last_params)]
        # a worker killed in the middle of a run
        dying = dx.map_blocks(kill_once, flag=flag, dtype=dx.dtype,
                              meta=np.empty((0, 0), dx.dtype))
        r = lossc.train(m, data={"x": dying, "y": dy}, optimizer=LBFGS(), **kw)
        out["lbfgs_killed"] = [r.history, flat(m, r.last_params)]
        out.update(persisted_runs(client, m, arrays, kw))
        out["killed"] = os.path.exists(flag)
        client.wait_for_workers(2, timeout=120)      # (the nanny's new worker)
        out["workers"] = len(client.scheduler_info()["workers"])
        out["cli"] = command_line(cluster.scheduler_address, os.path.dirname(flag), arrays)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
