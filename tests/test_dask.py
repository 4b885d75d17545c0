"""Dask collections as training data (lossc/optim/dask_chunks.py): on Dask's default
scheduler in this process, and on a LocalCluster of two worker processes (one run,
in a process of its own, tests/dask_cluster_case.py): full-batch iterates equal the
in-memory ones up to the order of the sums, and equal those of the same chunks read
in this process bit for bit; a worker killed mid-run changes nothing."""
import json
import subprocess
import sys

import numpy as np
import pytest

import lossc
from conftest import ROOT
from lossc.optim import LBFGS, Adam, NewtonCG
from lossc.optim.chunked import in_chunks
from lossc.optim.data import DataError

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")
sys.path.insert(0, str(ROOT / "tests"))
import dask_cluster_case as case  # noqa: E402


def _close(a, b, rel=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rel * max(1.0, np.max(np.abs(b))), (a, b)


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    flag = tmp_path_factory.mktemp("dask") / "killed-once"
    # (a hang guard only: the cluster's start and two short runs take far less)
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "dask_cluster_case.py"),
                        str(flag)], capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_cluster_gives_the_in_memory_iterates(cluster_run):
    history, params = cluster_run["lbfgs_cluster"]
    mem_history, mem_params = cluster_run["lbfgs_memory"]
    _close(history, mem_history)
    _close(params, mem_params, 1e-10)
    # the same chunks summed in the same tree in this process: the same numbers
    assert cluster_run["lbfgs_local"] == [history, params]


def test_persisted_collections_give_the_same_numbers(cluster_run):
    # chunks held in the workers' memory go through one task a worker; the tree's
    # order is the same, so the numbers are those of the same chunks in this process
    assert cluster_run["lbfgs_persisted"] == cluster_run["lbfgs_local"]
    assert cluster_run["frame_held"]
    history, params = cluster_run["lbfgs_persisted_frame"]
    mem_history, mem_params = cluster_run["lbfgs_memory"]
    _close(history, mem_history)
    _close(params, mem_params, 1e-10)


def test_a_pass_over_persisted_chunks_is_one_task_a_worker(cluster_run):
    # 8 chunks on 2 workers: one task on each worker holding chunks, no task a chunk
    # and none for the sums (they are the client's, in the fixed tree)
    assert cluster_run["chunks"] == 8
    assert cluster_run["pass_tasks"] == ["leaves"] * cluster_run["holders"]
    assert 1 <= cluster_run["holders"] <= 2


def test_a_nan_on_a_worker_is_named_by_chunk_row_and_column(cluster_run):
    assert cluster_run["nan"].startswith(
        "DataError: data: chunk 3 (rows 750 to 999): row 7, column 'x.1' is NaN"), \
        cluster_run["nan"]


def test_a_worker_killed_mid_run_changes_nothing(cluster_run):
    assert cluster_run["killed"]          # the flag file: a worker did end itself
    assert cluster_run["workers"] == 2     # ... and its nanny started another
    assert cluster_run["lbfgs_killed"] == cluster_run["lbfgs_cluster"]


def test_the_command_line_trains_on_a_scheduler_by_address(cluster_run):
    status, output, status_here, same = cluster_run["cli"]
    assert (status, status_here) == (0, 0), output
    assert "4 steps, 4 epochs" in output and "wrote" in output
    assert same         # the parameters trained on the cluster and in this process


@pytest.fixture(scope="module")
def model():
    return lossc.compile(case.SOURCE)


@pytest.mark.parametrize("opt", [LBFGS, NewtonCG])
def test_default_scheduler_and_rechunking(model, opt):
    arrays = case.data()
    # y chunked unlike x (and x split along its feature axis): rechunked to x's rows
    dx = da.from_array(arrays["x"], chunks=(300, 2))
    dy = da.from_array(arrays["y"], chunks=700)
    r = lossc.train(model, data={"x": dx, "y": dy}, optimizer=opt(), epochs=4)
    local = lossc.train(model, data=in_chunks(arrays, 300), optimizer=opt(), epochs=4)
    assert r.history == local.history
    r0 = lossc.train(model, data=arrays, optimizer=opt(), epochs=4)
    _close(r.history, r0.history)
    _close(model.pack_params(r.last_params), model.pack_params(r0.last_params), 1e-10)


def test_row_chunks_come_from_an_input_given_as_a_dask_array():
    """With the first declared input in memory, its one chunk was every input's: the
    whole data set one task, and a validation split of chunks refused."""
    from lossc.optim.dask_chunks import dask_chunks
    arrays = case.data()
    m = lossc.compile(case.SOURCE.replace("input x[D]\ninput y", "input y\ninput x[D]"))
    assert [s.name for s in m.inputs] == ["y", "x"]
    data = {"x": da.from_array(arrays["x"], chunks=(300, 4)), "y": arrays["y"]}
    sizes = dask_chunks(data, m).sizes
    assert sizes == (300,) * (case.ROWS // 300) + (case.ROWS % 300,)
    r = lossc.train(m, data=data, optimizer=LBFGS(), epochs=2, validation=0.3)
    assert r.epochs == 2


def test_a_dask_dataframe_with_a_csv_header(model):
    arrays = case.data()
    frame = pd.DataFrame({"y": arrays["y"], **{f"x.{j}": arrays["x"][:, j] for j in range(4)}})
    ddf = dd.from_pandas(frame, npartitions=3)
    r = lossc.train(model, data=ddf, optimizer=LBFGS(), epochs=5)
    r0 = lossc.train(model, data=arrays, optimizer=LBFGS(), epochs=5)
    _close(r.history, r0.history)
    with pytest.raises(DataError, match="x.3"):
        lossc.train(model, data=ddf.drop(columns=["x.3"]), optimizer=LBFGS(), epochs=1)


def test_mini_batches_on_one_partition_are_the_in_memory_run(model):
    arrays = case.data()
    dx = da.from_array(arrays["x"], chunks=(case.ROWS, 4))
    dy = da.from_array(arrays["y"], chunks=case.ROWS)
    kw = dict(epochs=2, batch_size=50, seed=3, monitor="batches")
    r = lossc.train(model, data={"x": dx, "y": dy}, optimizer=Adam(lr=0.01), **kw)
    r0 = lossc.train(model, data=arrays, optimizer=Adam(lr=0.01), **kw)
    assert r.step_losses == r0.step_losses
    assert np.array_equal(model.pack_params(r.last_params), model.pack_params(r0.last_params))


def test_unknown_chunk_sizes_and_wrong_shapes_are_refused_clearly(model):
    arrays = case.data()
    dx = da.from_array(arrays["x"], chunks=(300, 4))
    unknown = dx[dx[:, 0] > -100]
    with pytest.raises(DataError, match="compute_chunk_sizes"):
        lossc.train(model, data={"x": unknown, "y": arrays["y"]}, optimizer=LBFGS())
    with pytest.raises(DataError, match=r"shape \(N, 4\)"):
        lossc.train(model, data={"x": dx[:, :3], "y": arrays["y"]}, optimizer=LBFGS())


def test_the_model_loss_and_gradient_on_dask_arrays(model):
    arrays = case.data()
    theta = model.init_params(2)
    dx = da.from_array(arrays["x"], chunks=(300, 4))
    value, grads = model.value_and_grad(theta, x=dx, y=arrays["y"], lam=0.2)
    v0, g0 = model.value_and_grad(theta, **arrays, lam=0.2)
    _close(value, v0)
    for k in g0:
        _close(grads[k], g0[k])
    _close(model.loss(theta, x=dx, y=arrays["y"], lam=0.2), v0)


def test_the_calls_that_take_arrays_in_memory_refuse_dask_arrays_by_name(model):
    """predict, jvp, hvp and hessian raised the runtime's internal signal, a bare
    Exception whose message was the input's name."""
    arrays = case.data()
    theta = model.init_params(2)
    dx = da.from_array(arrays["x"], chunks=(300, 4))
    for call in (lambda: model.predict(theta, x=dx, y=arrays["y"], lam=0.2),
                 lambda: model.jvp(theta, theta, x=dx, y=arrays["y"], lam=0.2),
                 lambda: model.hvp(theta, theta, x=dx, y=arrays["y"], lam=0.2),
                 lambda: model.hessian(theta, x=dx, y=arrays["y"], lam=0.2)):
        with pytest.raises(TypeError, match="input 'x' is a Dask collection"):
            call()


def test_a_validation_split_of_dask_arrays_holds_out_the_same_chunks(model):
    arrays = case.data()
    dx = da.from_array(arrays["x"], chunks=(case.CHUNK, 4))
    dy = da.from_array(arrays["y"], chunks=case.CHUNK)
    kw = dict(validation=0.25, optimizer=LBFGS(), epochs=3, seed=4)
    r = lossc.train(model, data={"x": dx, "y": dy}, **kw)
    local = lossc.train(model, data=in_chunks(arrays, case.CHUNK), **kw)
    assert (r.history, r.val_history) == (local.history, local.val_history)
    assert len(r.val_history) == 4


def test_a_nan_in_a_dask_array_or_dataframe_is_named_by_chunk_row_and_column(model):
    arrays = case.data()
    arrays["x"][610, 3] = np.nan
    dx = da.from_array(arrays["x"], chunks=(300, 4))
    with pytest.raises(DataError, match=r"data: chunk 2 \(rows 600 to 899\): row 10, "
                                        r"column 'x\.3' is NaN"):
        lossc.train(model, data={"x": dx, "y": arrays["y"]}, optimizer=LBFGS(), epochs=2)
    frame = pd.DataFrame({"y": arrays["y"], **{f"x.{j}": arrays["x"][:, j] for j in range(4)}})
    with pytest.raises(DataError, match=r"data: partition 2 \(rows 600 to 899\): row 10, "
                                        r"column 'x\.3'"):
        lossc.train(model, data=dd.from_pandas(frame, chunksize=300), optimizer=LBFGS(),
                    epochs=2)
