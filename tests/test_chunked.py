"""Chunked data in this process (lossc.optim.chunked): the objective summed chunk by
chunk in a fixed tree equals the in-memory one up to the order of the sums, for every
reduction with a penalty; full-batch runs follow the in-memory iterates; mini-batch
epochs over one partition are the in-memory run bit for bit; NPY chunk files and
memory maps stream through the same objective."""
import copy
import os
import time

import numpy as np
import pytest

import lossc
from lossc.optim import LBFGS, SGD, Adam, NewtonCG
from lossc.optim.chunk_files import file_chunks
from lossc.optim.chunked import ChunkedData, NpyFile, _streamed_tree_sum, in_chunks, tree_sum
from lossc.optim.data import DataError

BASE = ("dim D = 4\ninput x[D]\ninput y\nparam w[D] = normal(0, 0.3)\nparam b\n"
        "hyper lam = 0.05\nz = dot(w, x) + b\nloss = softplus(z) - y * z\n"
        "penalty = lam * sum(w ^ 2)\n")


@pytest.fixture(scope="module", params=["mean", "sum"])
def model(request):
    return lossc.compile(BASE + ("reduce sum\n" if request.param == "sum" else ""))


def _data(n=1003, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ [1.0, -2.0, 0.5, 0.0]))).astype(float)
    return {"x": X, "y": y}


def _close(a, b, rel=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.max(np.abs(a - b)) <= rel * max(1.0, np.max(np.abs(b))), (a, b)


@pytest.mark.parametrize("n", range(1, 10))
def test_the_streamed_tree_adds_in_tree_sums_order(n):
    items = [str(k) for k in range(n)]
    def add(a, b):
        return f"({a}+{b})"
    assert _streamed_tree_sum(iter(items), n, add) == tree_sum(items, add)
    if n == 5:
        assert tree_sum(items, add) == "(((0+1)+(2+3))+4)"


def test_objective_gradient_and_hvp_equal_the_in_memory_ones(model):
    data = _data()
    theta = model.pack_params(model.init_params(3))
    v = np.random.default_rng(1).normal(size=model.n_params)
    chunked = ChunkedData(model, in_chunks(data, 97), {"lam": 0.3})
    value, grad = chunked.value_and_grad(theta)
    v0, g0 = model.value_and_grad_flat(theta, data=data, hypers={"lam": 0.3})
    _close(value, v0)
    _close(grad, g0)
    hv0 = model.hvp_flat(theta, v, data=data, hypers={"lam": 0.3})
    _close(chunked.hvp(theta, v), hv0)
    # the penalty counts once: many chunks give what one chunk gives
    one = ChunkedData(model, in_chunks(data, 5000), {"lam": 0.3}).value_and_grad(theta)
    _close(value, one[0])


@pytest.mark.parametrize("opt", [LBFGS, NewtonCG, lambda: SGD(lr=0.05)])
def test_full_batch_iterates_equal_the_in_memory_ones(model, opt):
    data = _data()
    kw = dict(epochs=6, batch_size=None, hypers={"lam": 0.1})
    r0 = lossc.train(model, data=data, optimizer=opt(), **kw)
    r1 = lossc.train(model, data=in_chunks(data, 100), optimizer=opt(), **kw)
    assert r1.steps == r0.steps and r1.stopped == r0.stopped
    _close(r1.history, r0.history)
    _close(model.pack_params(r1.last_params), model.pack_params(r0.last_params), 1e-10)


@pytest.mark.parametrize("opt", [lambda: Adam(lr=0.02), lambda: SGD(lr=0.05, momentum=0.9),
                                 lambda: Adam(lr=0.02, l1=0.001)])
def test_one_partition_is_the_in_memory_run_bit_for_bit(model, opt):
    data = _data()
    kw = dict(epochs=3, batch_size=64, seed=5, monitor="batches")
    r0 = lossc.train(model, data=data, optimizer=opt(), **kw)
    r1 = lossc.train(model, data=in_chunks(data, len(data["y"])), optimizer=opt(), **kw)
    assert r1.step_losses == r0.step_losses
    assert np.array_equal(model.pack_params(r1.last_params),
                          model.pack_params(r0.last_params))


def test_partitions_take_their_own_batches_in_a_seeded_order():
    m = lossc.compile(BASE)
    data = _data()
    seen = []
    r = lossc.train(m, data=in_chunks(data, 300), optimizer=Adam(lr=0.02), epochs=2,
                    batch_size=64, progress=lambda s, e, loss, rows: seen.append(rows))
    # partitions of 300, 300, 300, 103 rows: 5 + 5 + 5 + 2 batches an epoch
    assert r.steps == 2 * 17 and len(seen) == 34
    assert sorted(seen[:17]) == sorted([64] * 4 * 3 + [44] * 3 + [64, 39])
    again = lossc.train(m, data=in_chunks(data, 300), optimizer=Adam(lr=0.02), epochs=2,
                        batch_size=64)
    assert again.step_losses == r.step_losses
    assert r.history[-1] < r.history[0]


def test_npy_chunk_files_are_mapped_when_their_chunk_is_used(tmp_path, model):
    data = _data()
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for k, lo in enumerate(range(0, 1003, 250)):
            np.save(tmp_path / name / f"{k}.npy", data[name][lo:lo + 250])
    chunks = file_chunks(tmp_path, model)
    assert chunks.sizes == (250, 250, 250, 250, 3)
    assert isinstance(chunks.parts[0]["x"], NpyFile)     # (not mapped until used)
    np.testing.assert_array_equal(chunks.arrays(4)["x"].load(), data["x"][1000:])
    kw = dict(optimizer=LBFGS(), epochs=5)
    r0 = lossc.train(model, data=in_chunks(data, 250), **kw)
    r1 = lossc.train(model, data=str(tmp_path), **kw)
    r2 = lossc.train(model, data=str(tmp_path / "*" / "*.npy"), **kw)
    assert r1.history == r0.history == r2.history


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling link"])
def test_a_chunk_file_that_is_not_a_file_is_an_error_naming_it(tmp_path, model, kind):
    """A pipe, a folder or a dangling link named like a chunk file was skipped: its
    chunk vanished from the data without a word (x/9.npy beside y/9.npy)."""
    data = _data()
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for k, lo in enumerate(range(0, 1003, 500)):
            np.save(tmp_path / name / f"{k}.npy", data[name][lo:lo + 500])
    odd = tmp_path / "x" / "9.npy"
    {"fifo": os.mkfifo, "folder": os.mkdir,
     "dangling link": lambda p: os.symlink(tmp_path / "gone.npy", p)}[kind](odd)
    np.save(tmp_path / "y" / "9.npy", data["y"][:3])
    for where in (tmp_path, tmp_path / "*" / "*.npy"):
        with pytest.raises(DataError, match=f"{odd}: "):
            file_chunks(where, model)


@pytest.mark.parametrize("rows", [10, 300])
def test_a_chunk_file_rewritten_during_the_run_is_an_error_naming_it(tmp_path, model, rows):
    """Memory-mapped from the plan on, a file cut short killed the process (SIGBUS) or,
    within its last page, was read as zeros; a longer one was weighted by the planned
    rows."""
    data = _data()
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for k, lo in enumerate(range(0, 600, 200)):
            np.save(tmp_path / name / f"{k}.npy", data[name][lo:lo + 200])

    def rewrite(info):
        if info.epoch == 1:
            np.save(tmp_path / "x" / "2.npy", np.zeros((rows, 4)))
    with pytest.raises(DataError, match=r"x/2\.npy: the file changed during the run: it "
                                        rf"holds {rows} rows where it held 200"):
        lossc.train(model, data=str(tmp_path), optimizer=LBFGS(), epochs=3, callback=rewrite)


def test_many_chunk_files_hold_no_file_open(tmp_path, model):
    """Each file was memory-mapped when the run was planned (a map holds a file
    descriptor): some 500 chunks of two inputs ran out of them under the usual limit of
    1,024. A chunk's files are mapped when it is used and let go after."""
    import resource
    data = _data()
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for k in range(600):
            np.save(tmp_path / name / f"{k}.npy", data[name][k:k + 1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        r = lossc.train(model, data=str(tmp_path), optimizer=LBFGS(), epochs=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert r.epochs == 1


def test_chunks_in_this_process_do_not_depend_on_the_models_threads(model):
    """A chunk large enough for the model's threads was split across them in this
    process, where a Dask task computes it on one: the runs differed in the last bits
    with the thread count, and from the same chunks on Dask."""
    data = _data(n=2 * model._parallel_from + 7)
    rows = model._parallel_from + 3
    runs = []
    for threads in (1, 2):
        m = copy.copy(model).set_threads(threads)
        runs.append(lossc.train(m, data=in_chunks(data, rows), optimizer=LBFGS(), epochs=3))
    assert runs[0].history == runs[1].history
    np.testing.assert_array_equal(model.pack_params(runs[0].params),
                                  model.pack_params(runs[1].params))


def test_a_chunked_validation_set_beside_training_data_in_memory(tmp_path, model):
    """val_data in chunks was refused (a TypeError) or read whole when the training data
    were in memory; on the command line a folder was "a directory"."""
    data, val = _data(600, seed=1), _data(300, seed=2)
    want = lossc.train(model, data=data, val_data=val, optimizer=LBFGS(), epochs=4)
    got = lossc.train(model, data=data, val_data=in_chunks(val, 100), optimizer=LBFGS(),
                      epochs=4)
    _close(got.val_history, want.val_history)
    assert got.history == want.history and got.best_epoch == want.best_epoch
    stack = _stack(tmp_path, val)
    np.savez(tmp_path / "train.npz", **data)
    (tmp_path / "m.loss").write_text(BASE)
    for source in (stack, stack / "*" / "*.npy"):
        r = _cli("train", tmp_path / "m.loss", "--data", tmp_path / "train.npz",
                 "--val-data", source, "--optimizer", "lbfgs", "--epochs", "4",
                 "--out", tmp_path / "p.npz")
        assert r.exit_code == 0 and "(+300 for validation)" in r.output, r.output


def test_a_memory_map_trains_in_chunks(tmp_path, model):
    data = _data()
    np.save(tmp_path / "x.npy", data["x"])
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    # (a NumPy integer counts rows; a 0-d input is refused naming it)
    assert in_chunks({"x": x, "y": data["y"]}, np.int64(500)).sizes == (500, 500, 3)
    with pytest.raises(DataError, match="input 'y' must be an array of samples"):
        in_chunks({"x": x, "y": np.float64(1.0)}, 500)
    r0 = lossc.train(model, data=data, optimizer=LBFGS(), epochs=4)
    r1 = lossc.train(model, data=in_chunks({"x": x, "y": data["y"]}, 128),
                     optimizer=LBFGS(), epochs=4)
    _close(r1.history, r0.history)


@pytest.mark.parametrize("layout, words", [
    ({"x": [(10, 4)], "z": [(10,)]}, "'z' of"),
    ({"x": [(10, 4), (5, 4)], "y": [(10,)]}, "different numbers"),
    ({"x": [(10, 3)], "y": [(10,)]}, r"shape \(N, 4\)"),
    ({"x": [(10, 4)], "y": [(9,)]}, "have rows"),
])
def test_chunk_files_that_do_not_fit_are_refused_clearly(tmp_path, model, layout, words):
    for name, shapes in layout.items():
        (tmp_path / name).mkdir()
        for k, shape in enumerate(shapes):
            np.save(tmp_path / name / f"{k}.npy", np.zeros(shape))
    with pytest.raises(DataError, match=words):
        lossc.train(model, data=str(tmp_path), optimizer=LBFGS(), epochs=1)


def test_a_chunk_header_whose_size_wraps_64_bits_is_refused_by_its_size(tmp_path, model):
    """x/0.npy claims 2^62 + 1 rows of 4 float64 (2^64 + 4 elements, which a 64-bit
    product wraps to 4) and holds 4: refused before any memory map is made of it."""
    from numpy.lib import format as npy_format
    for name, shape in (("x", (2 ** 62 + 1, 4)), ("y", (2 ** 62 + 1,))):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "0.npy", "wb") as f:
            npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                  "shape": shape})
            f.write(np.zeros(4).tobytes())
    with pytest.raises(DataError) as e:
        file_chunks(tmp_path, model)
    assert str(e.value) == (f"data: {tmp_path / 'x' / '0.npy'}: the file is shorter than "
                            "its header says")


def _held_out_chunks(count, validation, seed):
    """The chunks a validation split holds out, as docs/dask.md describes the draw."""
    n_val = min(count - 1, max(1, round(validation * count)))
    return sorted(np.random.default_rng([seed, 1]).permutation(count)[:n_val].tolist())


@pytest.mark.parametrize("seed", [5, 6])
def test_a_validation_split_of_chunked_data_holds_out_seeded_whole_chunks(model, seed):
    data = _data()          # 1003 rows in 11 chunks of 100 (the last 3): 2 held out
    held = _held_out_chunks(11, 0.2, seed)
    rows = np.arange(1003) // 100
    val_rows = np.isin(rows, held)
    r = lossc.train(model, data=in_chunks(data, 100), validation=0.2, optimizer=LBFGS(),
                    epochs=3, seed=seed)
    r0 = lossc.train(model, data={k: a[~val_rows] for k, a in data.items()},
                     val_data={k: a[val_rows] for k, a in data.items()},
                     optimizer=LBFGS(), epochs=3, seed=seed)
    assert len(held) == 2 and len(r.val_history) == 4
    _close(r.history, r0.history)
    _close(r.val_history, r0.val_history)


def test_a_validation_split_needs_two_chunks(model):
    with pytest.raises(DataError, match="1 chunk.*val_data"):
        lossc.train(model, data=in_chunks(_data(), 2000), validation=0.2,
                    optimizer=LBFGS(), epochs=1)


def test_a_validation_set_beside_chunked_data(model):
    data, val = _data(), _data(200, seed=9)
    r = lossc.train(model, data=in_chunks(data, 300), val_data=in_chunks(val, 70),
                    optimizer=LBFGS(), epochs=3)
    r0 = lossc.train(model, data=data, val_data=val, optimizer=LBFGS(), epochs=3)
    _close(r.val_history, r0.val_history)


def test_the_command_line_holds_out_chunk_files(tmp_path):
    from click.testing import CliRunner

    from lossc.cli import main
    data = _data(400)       # 4 files of 100 rows: 1 held out for --validation 0.25
    for name, a in data.items():
        (tmp_path / "stack" / name).mkdir(parents=True)
        for k in range(4):
            np.save(tmp_path / "stack" / name / f"{k}.npy", a[100 * k:100 * (k + 1)])
    (tmp_path / "m.loss").write_text(BASE)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "m.loss"), "--data",
                                  str(tmp_path / "stack"), "--validation", "0.25",
                                  "--optimizer", "lbfgs", "--epochs", "2",
                                  "--out", str(tmp_path / "p.npz")])
    assert r.exit_code == 0, r.output
    assert "300 samples (+100 for validation)" in r.output and "on validation" in r.output


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("opt", [LBFGS, Adam])
def test_a_nan_or_inf_in_chunks_is_named_by_chunk_row_and_column(tmp_path, model, bad, opt):
    data = _data(400)
    data["x"][217, 2] = bad
    kw = dict(optimizer=opt(), epochs=2, **({} if opt is LBFGS else {"batch_size": 50}))
    what = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(DataError, match=r"data: chunk 2 \(rows 200 to 299\): row 17, "
                                        rf"column 'x\.2' is {what}"):
        lossc.train(model, data=in_chunks(data, 100), **kw)
    with pytest.raises(DataError, match=rf"x{os.sep}2\.npy, .*y{os.sep}2\.npy: row 17, "
                                        rf"column 'x\.2' is {what}"):
        lossc.train(model, data=str(_stack(tmp_path, data)), **kw)
    data["x"][217, 2] = 0.0
    data["y"][399] = bad            # (in a validation set: named as val_data)
    with pytest.raises(DataError, match=r"val_data: chunk 3 \(rows 300 to 399\): row 99, "
                                        "column 'y'"):
        lossc.train(model, data=in_chunks(_data(), 100), val_data=in_chunks(data, 100), **kw)


def test_a_fraction_in_an_int_input_of_a_chunk_is_named_by_its_row_in_the_chunk():
    """It was "sample 34", a position in the chunk worded as one in the data set."""
    m = lossc.compile("input x[2]\ninput k: int\nparam w[2]\nloss = w[k] * x[k]\n")
    k = (np.arange(200) % 2).astype(float)
    k[134] = 0.5
    with pytest.raises(DataError, match=r"chunk 1 \(rows 100 to 199\): row 34, column 'k'"):
        lossc.train(m, in_chunks({"x": np.ones((200, 2)), "k": k}, 100), LBFGS(), epochs=1)


@pytest.mark.parametrize("opt", [LBFGS, Adam, NewtonCG])
def test_an_index_out_of_range_in_chunks_is_named_by_chunk_and_row(tmp_path, opt):
    """It said "at sample 17": the row in the chunk, as if of the data, and no chunk."""
    m = lossc.compile("dim L = 2\ninput tok[L]: int\ninput y\nparam E[5]\n"
                      "loss = (sum(E[tok]) - y) ^ 2\n")
    rng = np.random.default_rng(0)
    data = {"tok": rng.integers(0, 5, (50, 2)), "y": rng.normal(size=50)}
    data["tok"][37, 1] = -1
    kw = dict(optimizer=opt(), epochs=2, **({"batch_size": 10} if opt is Adam else {}))
    with pytest.raises(DataError, match=r"data: chunk 1 \(rows 20 to 39\): index .* = -1 "
                                        r"is out of range 0\.\.4 at row 17 of the chunk"):
        lossc.train(m, data=in_chunks(data, 20), **kw)
    with pytest.raises(DataError, match=rf"tok{os.sep}1\.npy, .*: index .* at row 17 of"):
        lossc.train(m, data=str(_stack(tmp_path, data, rows=20)), **kw)


def _stack(tmp_path, data, rows=100):
    """data as NPY chunk files of `rows` rows, a folder per input; the folder."""
    stack = tmp_path / "stack"
    for name, a in data.items():
        (stack / name).mkdir(parents=True)
        for k, lo in enumerate(range(0, len(a), rows)):
            np.save(stack / name / f"{k}.npy", a[lo:lo + rows])
    return stack


def _cli(*args):
    from click.testing import CliRunner

    from lossc.cli import main
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


def _objective_and_norm(output):
    import re
    found = re.search(r"objective (\S+) on (\d+) samples; gradient norm (\S+)", output)
    assert found, output
    return float(found[1]), int(found[2]), float(found[3])


def _trained(tmp_path):
    """400 rows as 4 NPY chunk files and as all.npz, a model with an output, and its
    parameters trained on all.npz: (data, the chunks' folder, model file, params)."""
    data = _data(400)
    stack = _stack(tmp_path, data)
    np.savez(tmp_path / "all.npz", **data)
    model = tmp_path / "m.loss"
    model.write_text(BASE + "output p = sigmoid(z)\n")
    params = tmp_path / "p.npz"
    assert _cli("train", model, "--data", tmp_path / "all.npz", "--optimizer", "lbfgs",
                "--epochs", "3", "--out", params).exit_code == 0
    return data, stack, model, params


def test_eval_and_predict_stream_chunk_files(tmp_path):
    data, stack, model, params = _trained(tmp_path)
    whole = _cli("eval", model, "--params", params, "--data", tmp_path / "all.npz")
    for source in (stack, stack / "*" / "*.npy"):
        r = _cli("eval", model, "--params", params, "--data", source)
        assert r.exit_code == 0, r.output
        value, n, norm = _objective_and_norm(r.output)
        value0, n0, norm0 = _objective_and_norm(whole.output)
        assert n == n0 == 400
        _close(value, value0)
        _close(norm, norm0, 1e-9)
    r = _cli("predict", model, "--params", params, "--data", stack, "--out", tmp_path / "c.npz")
    assert r.exit_code == 0 and "p for 400 samples" in r.output, r.output
    assert _cli("predict", model, "--params", params, "--data", tmp_path / "all.npz",
                "--out", tmp_path / "m.npz").exit_code == 0
    assert np.array_equal(np.load(tmp_path / "c.npz")["p"], np.load(tmp_path / "m.npz")["p"])


def test_eval_and_predict_on_chunks_refuse_what_they_cannot_do(tmp_path):
    data, stack, model, params = _trained(tmp_path)
    r = _cli("eval", model, "--params", params, "--data", stack, "--metric", "accuracy")
    assert r.exit_code == 1 and "need the data in memory" in r.output
    r = _cli("eval", model, "--params", params, "--data", tmp_path / "all.npz",
             "--scheduler", "local")
    assert r.exit_code == 1 and "--scheduler evaluates chunked --data" in r.output
    before = (stack / "y" / "3.npy").read_bytes()
    r = _cli("predict", model, "--params", params, "--data", stack / "*" / "*.npy",
             "--out", stack / "y" / "3.npy")
    assert r.exit_code == 1 and "one of the files of --data" in r.output
    assert (stack / "y" / "3.npy").read_bytes() == before
    data["x"][305, 1] = np.inf
    np.save(stack / "x" / "3.npy", data["x"][300:])
    r = _cli("predict", model, "--params", params, "--data", stack, "--out", tmp_path / "p.csv")
    assert r.exit_code == 1 and "3.npy: row 5, column 'x.1' is inf" in r.output, r.output
    assert not (tmp_path / "p.csv").exists()
    r = _cli("eval", model, "--params", params, "--data", stack)
    assert r.exit_code == 1 and "3.npy: row 5, column 'x.1' is inf" in r.output, r.output


def test_a_local_clusters_data_error_is_one_line(tmp_path):
    """--scheduler local: the workers logged the failed task with its traceback before
    lossc's own one-line error."""
    import subprocess
    import sys
    data = _data(400)
    data["x"][305, 1] = np.inf
    stack = _stack(tmp_path, data)
    model = tmp_path / "m.loss"
    model.write_text(BASE)
    r = subprocess.run([sys.executable, "-m", "lossc.cli", "train", str(model), "--data",
                        str(stack), "--scheduler", "local", "--optimizer", "lbfgs", "-q",
                        "--out", str(tmp_path / "p.npz")], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "lossc: error: data: " + r.stderr.split("data: ", 1)[1].strip()], r.stderr
    assert "3.npy: row 5, column 'x.1' is inf" in r.stderr


def test_ctrl_c_on_a_local_cluster_is_one_line(tmp_path):
    """--scheduler local interrupted as a terminal does it, SIGINT to the whole
    process group: the workers printed their KeyboardInterrupt's tracebacks, and
    asyncio the client's failed tasks', before lossc's line."""
    import signal
    import subprocess
    import sys
    stack = _stack(tmp_path, _data(400))
    model = tmp_path / "m.loss"
    model.write_text(BASE)
    run = subprocess.Popen([sys.executable, "-m", "lossc.cli", "train", str(model), "--data",
                            str(stack), "--scheduler", "local", "--optimizer", "adam",
                            "--epochs", "1000000", "--out", str(tmp_path / "p.npz")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"},
                           start_new_session=True)
    try:
        first = run.stderr.readline()     # (the run's first line: the cluster is up)
        time.sleep(1.0)
        os.killpg(run.pid, signal.SIGINT)
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert first.startswith("training m.loss"), first + err
    assert run.returncode == 130, err
    assert "Traceback" not in err and "Task exception" not in err, err
    assert "lossc: interrupted at step" in err.strip().splitlines()[-1], err
    assert (tmp_path / "p.npz").exists()


def test_ctrl_c_while_a_local_cluster_starts_is_taken_after_it_started():
    """Dask's LocalCluster interrupted in its start left workers that its exit handler
    failed to close, with a traceback: an interrupt there is taken after it."""
    import signal
    from lossc.cli_train import interrupts_deferred
    with interrupts_deferred() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_predict_on_chunks_reads_no_cell_of_an_input_the_outputs_do_not_use(tmp_path):
    """Labels the output does not use may be NaN in NPY chunks and blank in Parquet
    ones (they were refused as "row 5, column 'y' is NaN")."""
    data, stack, model, params = _trained(tmp_path)
    want = _cli("predict", model, "--params", params, "--data", tmp_path / "all.npz",
                "--out", tmp_path / "want.npz")
    assert want.exit_code == 0, want.output
    np.save(stack / "y" / "3.npy", np.full(100, np.nan))
    loaded = []
    load = NpyFile.load
    with pytest.MonkeyPatch.context() as mp:      # (the labels' files are not even mapped)
        mp.setattr(NpyFile, "load", lambda f: (loaded.append(f.path), load(f))[1])
        r = _cli("predict", model, "--params", params, "--data", stack, "--out",
                 tmp_path / "c.npz")
    assert r.exit_code == 0, r.output
    assert loaded and all(os.sep + "x" + os.sep in path for path in loaded), loaded
    assert np.array_equal(np.load(tmp_path / "c.npz")["p"],
                          np.load(tmp_path / "want.npz")["p"])
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"y": [None] * 400, **{f"x.{j}": data["x"][:, j] for j in range(4)}})
    for k in range(4):
        frame.iloc[100 * k:100 * (k + 1)].to_parquet(tmp_path / f"part{k}.parquet")
    r = _cli("predict", model, "--params", params, "--data", tmp_path / "*.parquet",
             "--out", tmp_path / "q.npz")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "q.npz")["p"],
                          np.load(tmp_path / "want.npz")["p"])


def test_eval_on_parquet_files(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pytest.importorskip("dask.dataframe")
    data = _data(300)
    frame = pd.DataFrame({"y": data["y"], **{f"x.{j}": data["x"][:, j] for j in range(4)}})
    for k in range(3):
        frame.iloc[100 * k:100 * (k + 1)].to_parquet(tmp_path / f"part{k}.parquet")
    np.savez(tmp_path / "all.npz", **data)
    model = tmp_path / "m.loss"
    model.write_text(BASE)
    params = tmp_path / "p.npz"
    assert _cli("train", model, "--data", tmp_path / "all.npz", "--epochs", "1",
                "--out", params).exit_code == 0
    r = _cli("eval", model, "--params", params, "--data", tmp_path / "*.parquet")
    assert r.exit_code == 0, r.output
    whole = _cli("eval", model, "--params", params, "--data", tmp_path / "all.npz")
    _close(_objective_and_norm(r.output)[0], _objective_and_norm(whole.output)[0])
    # a file whose columns are not the first's: pandas' KeyError with a traceback, or
    # (another column) a column dropped without a word
    for renamed, words in [({"x.3": "x.4"}, "has no column 'x.3'"),
                           ({"y": "y2"}, "has no column 'y'")]:
        frame.iloc[200:].rename(columns=renamed).to_parquet(tmp_path / "part2.parquet")
        r = _cli("eval", model, "--params", params, "--data", tmp_path / "*.parquet")
        assert r.exit_code == 1 and f"part2.parquet: {words}, unlike " in r.output, r.output
    frame.iloc[200:].assign(extra=1.0).to_parquet(tmp_path / "part2.parquet")
    r = _cli("train", model, "--data", tmp_path / "*.parquet", "--out", tmp_path / "q.npz")
    assert r.exit_code == 1 and "part2.parquet: has a column 'extra', unlike" in r.output
    # (the stored index is a column too: the first file's named index, a later
    # file's without one, was pandas' KeyError)
    named = frame.iloc[200:].copy()
    named.index.name = "row"
    named.to_parquet(tmp_path / "part2.parquet")
    r = _cli("eval", model, "--params", params, "--data", tmp_path / "*.parquet")
    assert r.exit_code == 1 and "part2.parquet: has a column 'row (index)', unlike" in r.output
    (tmp_path / "part2.parquet").write_bytes(b"not Parquet")
    r = _cli("eval", model, "--params", params, "--data", tmp_path / "*.parquet")
    assert r.exit_code == 1 and "part2.parquet: not a readable Parquet file" in r.output
