"""Row-sparse gradients: a parameter used only through gathers gets the gradient of the
rows a batch touched (codegen/sparse.py, runtime/sparse.py), value_and_sparse_grad
gives them, and the fused SGD and lazy Adam steps update those rows only."""
import dataclasses
import math
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import lossc
from lossc.api import compile_graph
from lossc.cli import main
from lossc.compiler import compile_source
from lossc.codegen.prefetch import AHEAD_ROW_LINES, UPDATE_AHEAD_ROWS
from lossc.codegen.sparse import GENERATION_LIMIT
from lossc.optim.optimizers import SGD, Adam
from lossc.runtime.fused import FusedSteps
from lossc.runtime.sparse import RowRecords
from test_fused import python_epoch

FACTORS = """dim U = {U}
dim I = {I}
dim F = {F}
input u: int
input i: int
input r
param P[U, F] = normal(0, 0.1)
param Q[I, F] = normal(0, 0.1)
loss = (dot(P[u], Q[i]) - r) ^ 2
"""

TOKENS = """dim V = 40
dim F = 6
dim L = 5
input tok[L]: int
input label: int
param E[V, F] = normal(0, 0.3)
param W[3, F] = normal(0, 0.3)
param c[3]
h = mean(E[tok], axis=0)
z = W @ h + c
loss = logsumexp(z) - z[label]
"""


def tokens(rng, n):
    tok = rng.integers(0, 40, (n, 5))
    tok[:, 1] = tok[:, 0]          # a repeated index in every sample
    return {"tok": tok, "label": rng.integers(0, 3, n)}


def factors(rng, n, U=50, I=30):
    return {"u": rng.integers(0, U, n), "i": rng.integers(0, I, n), "r": rng.normal(size=n)}


def test_the_scratch_space_does_not_grow_with_a_row_sparse_table():
    """The per-lane gradient accumulators are for the parameters that are not
    row-sparse: a table's rows go to their slots, and accumulators for the whole table
    reserved W times its size (4 GB of scratch for W8's tables of 1,000,000 rows)."""
    small = lossc.compile(FACTORS.format(U=1000, I=1000, F=32), cache=False)
    large = lossc.compile(FACTORS.format(U=1_000_000, I=1_000_000, F=32), cache=False)
    assert large.sparse_rows and large.code.work_size == small.code.work_size
    assert large.code.work_size < 1_000_000


def test_parameters_used_only_through_gathers_are_row_sparse():
    m = lossc.compile(FACTORS.format(U=50, I=30, F=4), cache=False)
    assert m.sparse_rows == {"P": 1, "Q": 1}
    assert lossc.compile(TOKENS, cache=False).sparse_rows == {"E": 5}
    # a penalty, or a use of the whole table, makes the gradient dense
    penalized = FACTORS.format(U=50, I=30, F=4) + "penalty = 0.1 * sum(P ^ 2)\n"
    assert lossc.compile(penalized, cache=False).sparse_rows == {"Q": 1}
    whole = FACTORS.format(U=50, I=30, F=4).replace("- r) ^ 2", "- r) ^ 2 + sum(Q) * r")
    assert lossc.compile(whole, cache=False).sparse_rows == {"P": 1}


def test_the_lowered_graph_shows_row_scatter(tmp_path):
    path = tmp_path / "f.loss"
    path.write_text(FACTORS.format(U=50, I=30, F=4))
    out = CliRunner().invoke(main, ["graph", str(path), "--after", "lower"]).output
    assert "grad.P.sample" in out and out.count("row_scatter") == 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B", [1, 7, 8, 9, 17, 33, 100])
def test_sparse_and_dense_gradients_agree_with_the_plain_code(dtype, B):
    """The touched rows, made dense, are value_and_grad's gradient bit for bit, and
    that is the plain code's (which sums in another order) within rounding."""
    m = lossc.compile(TOKENS, dtype=dtype, cache=False)
    plain = compile_graph(compile_source(TOKENS).graph, dtype, plain=True)
    rng = np.random.default_rng(B)
    theta, data = m.init_params(1), tokens(rng, B)
    v, dense = m.value_and_grad(theta, **data)
    vs, sparse = m.value_and_sparse_grad(theta, **data)
    v0, g0 = plain.value_and_grad(theta, **data)
    assert v == vs
    rows, values = sparse["E"]
    assert list(rows) == sorted(set(data["tok"].ravel()))
    assert values.shape == (len(rows), 6)
    np.testing.assert_array_equal(sparse["E"].to_dense(), dense["E"])
    np.testing.assert_array_equal(sparse["W"], dense["W"])
    tol = 1e-12 if dtype == "float64" else 1e-5
    for k in g0:
        np.testing.assert_allclose(dense[k], g0[k], rtol=tol, atol=tol)


ROW_WIDTHS = (1, 3, 7, 8, 9, 16, 31, 32, 33)   # every lane count's whole vectors and remainders


def rows_in_batch_order(m, theta, data, name):
    """A row-sparse parameter's touched rows as codegen/sparse.py promises them: each
    sample's row gradient (model m's, on the sample alone) added into its row in
    batch order from 0, in the model's dtype, then scaled by 1/B once."""
    B = len(data["r"])
    acc = {}
    for k in range(B):
        _, g = m.value_and_sparse_grad(theta, **{n: a[k:k + 1] for n, a in data.items()})
        (row,), (value,) = g[name]
        acc[row] = acc[row] + value if row in acc else np.zeros_like(value) + value
    rows = np.array(sorted(acc), dtype=np.int64)
    scale = np.asarray(1.0 / B, dtype=m.dtype)
    return rows, np.stack([acc[r] * scale for r in rows])


@pytest.mark.parametrize("bits", [64, 256, 512])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_row_gradients_add_in_batch_order_at_every_row_width(dtype, bits):
    """The touched rows' gradients, added a vector of W row elements at a time (the
    lanes' rows transposed), or element by element for the last F mod W and without
    SIMD, are the per-sample rows added in batch order bit for bit; and the rows
    `P[u]`, `Q[i]` a lane group gathers as vectors (transposed) give each sample the
    values the code without SIMD reads element by element: the per-sample rows come
    from the model compiled without SIMD (64-bit vectors: one lane). At row widths
    through every lane count's remainders, batches of 1 and around the lanes, rows
    repeated within a batch (and within a lane group) and a batch of one row only."""
    def compiled(F, bits):
        options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
        return lossc.compile(FACTORS.format(U=5, I=40, F=F), dtype=dtype, cache=False,
                             options=options)
    rng = np.random.default_rng(bits + len(dtype))
    for F in ROW_WIDTHS:
        m, scalar = compiled(F, bits), compiled(F, 64)
        theta = m.init_params(F)
        for B in (1, 7, 8, 9, 33):
            data = factors(rng, B, U=5, I=40)
            if B == 9:
                data["u"][:] = 3
            _, sparse = m.value_and_sparse_grad(theta, **data)
            for name in ("P", "Q"):
                rows, values = rows_in_batch_order(scalar, theta, data, name)
                np.testing.assert_array_equal(sparse[name].rows, rows)
                np.testing.assert_array_equal(sparse[name].values, values,
                                              err_msg=f"{name}, F={F}, B={B}")


def test_sparse_gradients_on_two_threads_equal_the_dense_ones():
    m = lossc.compile(TOKENS, cache=False)
    m.set_threads(2, min_samples_per_thread=2)
    rng = np.random.default_rng(3)
    theta, data = m.init_params(1), tokens(rng, 61)
    v, dense = m.value_and_grad(theta, **data)
    vs, sparse = m.value_and_sparse_grad(theta, **data)
    assert v == vs
    np.testing.assert_array_equal(sparse["E"].to_dense(), dense["E"])
    m.set_threads(1)
    np.testing.assert_allclose(m.value_and_grad(theta, **data)[1]["E"], dense["E"],
                               rtol=1e-13, atol=1e-15)


def test_an_index_error_leaves_the_next_call_right():
    """A call stopped by an index error leaves hash table entries of its generation
    behind; the next call's generation takes them as free."""
    m = lossc.compile(FACTORS.format(U=50, I=30, F=4), cache=False)
    theta = m.init_params(0)
    bad = {"u": np.array([3, 4, 99]), "i": np.array([1, 2, 3]), "r": np.zeros(3)}
    with pytest.raises(ValueError, match="out of range"):
        m.value_and_sparse_grad(theta, **bad)
    good = {"u": np.array([3, 4, 3]), "i": np.array([1, 2, 3]), "r": np.ones(3)}
    _, sparse = m.value_and_sparse_grad(theta, **good)
    assert list(sparse["P"].rows) == [3, 4]
    np.testing.assert_array_equal(sparse["P"].to_dense(), m.value_and_grad(theta, **good)[1]["P"])


def test_rows_prefetched_ahead_from_indices_out_of_range_do_not_fault():
    """The gradient prefetches the rows of the samples GATHER_AHEAD_SAMPLES on from
    their indices before the gathers check them: indices far outside the table (huge,
    negative) make prefetches of addresses that are no memory of the process, which
    must not fault. The call reports the first bad sample's index error; the samples'
    gradients before it and a later good batch are unaffected (in a subprocess: a
    fault would kill the process)."""
    script = textwrap.dedent("""
        import numpy as np
        import lossc
        m = lossc.compile('''%s''', cache=False)
        theta = m.init_params(0)
        rng = np.random.default_rng(0)
        u, i = rng.integers(0, 50, 64), rng.integers(0, 30, 64)
        good = {"u": u.copy(), "i": i.copy(), "r": np.ones(64)}
        u[40], u[41], i[42] = 2 ** 62, -2 ** 40, 2 ** 50
        try:
            m.value_and_sparse_grad(theta, u=u, i=i, r=np.ones(64))
        except ValueError as e:
            print("out of range" in str(e))
        _, sparse = m.value_and_sparse_grad(theta, **good)
        _, dense = m.value_and_grad(theta, **good)
        print(np.array_equal(sparse["P"].to_dense(), dense["P"]))
    """) % FACTORS.format(U=50, I=30, F=32)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_a_record_takes_the_memory_of_its_batch_not_of_its_table():
    """Nothing in a frame's RowGrads records is the table's size: a batch of 64 on a
    1,000,000-row table allocates what 64 rows need (the hash table that finds a row's
    slot included), not a word per table row."""
    m = lossc.compile(FACTORS.format(U=1_000_000, I=100, F=4), cache=False)
    tracemalloc.start()
    try:
        records = RowRecords(m)
        records.fit(64)
        allocated = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert records.capacity == 64
    assert allocated < 64 * 1024 < 1_000_000 * 8


def test_the_generation_wrapping_round_frees_the_hash_table():
    """At the generation limit the record's hash table is cleared and the generation
    starts again at 1: the entries of the calls before are never taken for this call's.
    (Here the first call, generation 1, gave rows 18 and 19 slots 18 and 19; left as
    they were, its entries would be this call's, and rows 18 and 19 would find slots
    this call never took: their gradients lost.)"""
    m = lossc.compile(FACTORS.format(U=50, I=30, F=4), cache=False)
    theta = m.init_params(0)
    first = {"u": np.arange(20), "i": np.arange(20), "r": np.ones(20)}
    m.value_and_sparse_grad(theta, **first)
    calls = m._paths.take()
    for k in range(len(calls.frame.rows.specs)):
        calls.frame.rows.table[k].generation = GENERATION_LIMIT - 1
    m._paths.give(calls)
    later = {"u": np.array([19, 18, 19]), "i": np.array([17, 16, 15]), "r": np.zeros(3)}
    _, sparse = m.value_and_sparse_grad(theta, **later)
    assert [rec.generation for rec in calls.frame.rows.table] == [1, 1]
    assert list(sparse["P"].rows) == [18, 19]
    _, dense = m.value_and_grad(theta, **later)
    np.testing.assert_array_equal(sparse["P"].to_dense(), dense["P"])
    np.testing.assert_array_equal(sparse["Q"].to_dense(), dense["Q"])


@pytest.mark.parametrize("make", [lambda: SGD(0.05), lambda: SGD(0.05, momentum=0.5),
                                  lambda: SGD(0.05, weight_decay=0.1)],
                         ids=["sgd", "momentum", "decay"])
def test_fused_sgd_on_touched_rows_is_the_dense_step_bit_for_bit(make):
    """SGD without momentum or weight decay updates the touched rows only; the
    parameters are the dense Python loop's bit for bit (the others stay dense)."""
    m = lossc.compile(FACTORS.format(U=50, I=30, F=4), cache=False)
    rng = np.random.default_rng(0)
    bound = m.bind(factors(rng, 203))
    theta0 = m.pack_params(m.init_params(2))
    p1, p2 = theta0.copy(), theta0.copy()
    o1, o2 = make(), make()
    fused = FusedSteps(m, o2, bound, 16)
    assert (fused.frame.segments != 0) == (o2.momentum == 0 and o2.weight_decay == 0)
    for _ in range(3):
        order = rng.permutation(203).astype(np.int64)
        python_epoch(m, o1, p1, bound, order, 16)
        fused.run(p2, order, 0, 13)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("bits", [64, 512])
def test_fused_sgd_on_touched_rows_at_every_row_width(bits):
    """The fused SGD steps' update of the touched rows (a loop over the row width that
    LLVM vectorizes, with its remainder, prefetching the row UPDATE_AHEAD_ROWS slots
    on) and the gradient's vector row adds and scaling, at row widths through every
    lane count's remainders and rows longer than the prefetches a row may take
    (AHEAD_ROW_LINES), batches with repeated rows (P: 7 rows) and with more touched
    rows than the prefetch distance (Q: 300 rows): the parameters are the dense Python
    loop's bit for bit."""
    options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
    long_row = AHEAD_ROW_LINES * 64 // np.dtype(np.float64).itemsize + 3
    for F in ROW_WIDTHS + (long_row,):
        m = lossc.compile(FACTORS.format(U=7, I=300, F=F), cache=False, options=options)
        rng = np.random.default_rng(F)
        data = factors(rng, 150, U=7, I=300)
        bound = m.bind(data)
        p1 = m.pack_params(m.init_params(F))
        p2 = p1.copy()
        fused = FusedSteps(m, SGD(0.05), bound, 50)
        order = rng.permutation(150).astype(np.int64)
        touched = [len(set(data["i"][order[k:k + 50]])) for k in range(0, 150, 50)]
        assert min(touched) > UPDATE_AHEAD_ROWS, touched
        python_epoch(m, SGD(0.05), p1, bound, order, 50)
        fused.run(p2, order, 0, 3)
        np.testing.assert_array_equal(p1, p2, err_msg=f"F={F}")


def sparse_adam_reference(p, rows_values, state, t, lr, betas, eps):
    """torch.optim.SparseAdam's update (torch/optim/_functional.py sparse_adam) in
    NumPy, on one parameter (rows first), from the uncoalesced (row, value) pairs of a
    batch: coalesced (summed per row), then the moments and parameters of those rows."""
    rows, values = rows_values
    uniq, where = np.unique(rows, return_inverse=True)
    g = np.zeros((len(uniq),) + values.shape[1:])
    np.add.at(g, where, values)
    m, v = state
    b1, b2 = betas
    m_old, v_old = m[uniq].copy(), v[uniq].copy()
    d1 = (g - m_old) * (1 - b1)
    d2 = (g ** 2 - v_old) * (1 - b2)
    m[uniq] += d1
    v[uniq] += d2
    step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p[uniq] += -step * ((d1 + m_old) / (np.sqrt(d2 + v_old) + eps))


def adam_reference(p, g, state, t, lr, betas, eps):
    m, v = state
    b1, b2 = betas
    m += (1 - b1) * (g - m)
    v *= b2
    v += (1 - b2) * g * g
    p -= (lr / (1 - b1 ** t)) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)


def per_sample_rows(m, theta, data):
    """Each sample's rows of E and their gradients (before the mean), by the model:
    the gradient of sample k alone, times 1/B."""
    B = len(data["label"])
    rows, values = [], []
    for k in range(B):
        _, g = m.value_and_sparse_grad(theta, **{n: a[k:k + 1] for n, a in data.items()})
        rows.append(g["E"].rows)
        values.append(g["E"].values / B)
    return np.concatenate(rows), np.concatenate(values)


def test_lazy_adam_is_sparse_adam():
    """The fused lazy Adam steps against SparseAdam written in NumPy (the embedding
    table) and Adam (the dense parameters), and against torch where it is installed."""
    m = lossc.compile(TOKENS, cache=False)
    rng = np.random.default_rng(5)
    N, bs, lr, betas, eps = 48, 8, 0.02, (0.9, 0.99), 1e-8
    data = tokens(rng, N)
    bound = m.bind(data)
    theta0 = m.init_params(1)
    flat = m.pack_params(theta0)
    order = rng.permutation(N).astype(np.int64)
    fused = FusedSteps(m, Adam(lr, betas=betas, eps=eps, lazy=True), bound, bs)
    assert fused.frame.segments != 0
    fused.run(flat, order, 0, N // bs)
    ref = {k: np.array(v, dtype=np.float64) for k, v in theta0.items()}
    state = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in ref.items()}
    for t in range(1, N // bs + 1):
        idx = order[(t - 1) * bs:t * bs]
        batch = {k: a[idx] for k, a in data.items()}
        _, dense = m.value_and_grad(ref, **batch)
        sparse_adam_reference(ref["E"], per_sample_rows(m, ref, batch), state["E"], t,
                              lr, betas, eps)
        for k in ("W", "c"):
            adam_reference(ref[k], dense[k], state[k], t, lr, betas, eps)
    got = m.unpack_params(flat)
    untouched = np.setdiff1d(np.arange(40), data["tok"].ravel())
    np.testing.assert_array_equal(got["E"][untouched], theta0["E"][untouched])
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-14, err_msg=k)
    torch = pytest.importorskip("torch")
    emb = torch.nn.Embedding(40, 6, sparse=True, dtype=torch.float64)
    W = torch.tensor(theta0["W"], requires_grad=True)
    c = torch.tensor(theta0["c"], requires_grad=True)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(theta0["E"]))
    opts = [torch.optim.SparseAdam(emb.parameters(), lr=lr, betas=betas, eps=eps),
            torch.optim.Adam([W, c], lr=lr, betas=betas, eps=eps)]
    for t in range(N // bs):
        idx = order[t * bs:(t + 1) * bs]
        h = emb(torch.from_numpy(data["tok"][idx])).mean(dim=1)
        z = h @ W.T + c
        lab = torch.from_numpy(data["label"][idx])
        loss = (torch.logsumexp(z, 1) - z.gather(1, lab[:, None])[:, 0]).mean()
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
    np.testing.assert_allclose(got["E"], emb.weight.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_lazy_adam_refuses_what_sparse_adam_has_not():
    for kw in ({"weight_decay": 0.1}, {"amsgrad": True}, {"clip_norm": 1.0}, {"l1": 0.1}):
        with pytest.raises(ValueError, match="lazy=True"):
            Adam(0.01, lazy=True, **kw)
    m = lossc.compile(TOKENS, cache=False)
    data = tokens(np.random.default_rng(0), 20)
    with pytest.raises(ValueError, match="lazy=True"):
        lossc.train(m, data=data, optimizer=Adam(0.01, lazy=True), batch_size=None,
                    epochs=1)
    result = lossc.train(m, data=data, optimizer=Adam(0.01, lazy=True), batch_size=4,
                         epochs=2)
    assert result.ok


@pytest.mark.parametrize("batch_size", [None, 0, 20, 27])
def test_lazy_adam_says_a_batch_of_every_sample_is_full_batch_descent(batch_size):
    """It said "trains by mini-batches (batch_size=)" to a run that gave a batch_size,
    one of at least the 20 samples."""
    m = lossc.compile(TOKENS, cache=False)
    data = tokens(np.random.default_rng(0), 20)
    with pytest.raises(ValueError, match=r"a batch_size that is None, 0 or at least the "
                       r"number of training samples \(20\) makes every step full-batch "
                       r"descent: give a batch_size below 20"):
        lossc.train(m, data=data, optimizer=Adam(0.01, lazy=True), batch_size=batch_size,
                    epochs=1)

    class MyAdam(Adam):
        pass
    with pytest.raises(ValueError, match="not a subclass such as MyAdam"):
        lossc.train(m, data=data, optimizer=MyAdam(0.01, lazy=True), batch_size=4,
                    epochs=1)


def test_python_lazy_adam_matches_the_fused_steps():
    """Adam(lazy=True).step on value_and_sparse_grad's gradients (a dict) takes the same
    steps as the fused ones, bit for bit in float64."""
    m = lossc.compile(TOKENS, cache=False)
    rng = np.random.default_rng(9)
    data = tokens(rng, 40)
    theta = m.init_params(2)
    flat = m.pack_params(theta)
    order = np.arange(40, dtype=np.int64)
    FusedSteps(m, Adam(0.01, lazy=True), m.bind(data), 8).run(flat, order, 0, 5)
    opt = Adam(0.01, lazy=True)
    for k in range(5):
        _, g = m.value_and_sparse_grad(theta, **{n: a[8 * k:8 * k + 8] for n, a in data.items()})
        opt.step(theta, g)
    np.testing.assert_array_equal(m.pack_params(theta), flat)


def test_a_fused_step_touches_only_the_rows_of_its_batch():
    """The cost of a step does not grow with the table: counted as the memory pages a
    few SGD steps on a 1,000,000-row table fault in (each page of a table, gradient or
    scratch buffer read or written for the first time is one), against the pages of
    the table. Transparent huge pages are off in the process (prctl PR_SET_THP_DISABLE:
    NumPy asks for them for large arrays), so a page is 4 KB whatever the machine's
    huge page settings, and a dense step's count is the table's pages."""
    script = textwrap.dedent("""
        import ctypes, resource, sys
        if ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) != 0:      # PR_SET_THP_DISABLE
            sys.exit("prctl(PR_SET_THP_DISABLE) failed")
        import numpy as np
        import lossc
        from lossc.runtime.fused import FusedSteps
        src = '''%s'''
        m = lossc.compile(src, cache=False)
        rng = np.random.default_rng(0)
        n = 2000
        bound = m.bind({"u": rng.integers(0, 1000000, n), "i": rng.integers(0, 100, n),
                        "r": rng.normal(size=n)})
        theta = np.zeros(m.n_params)        # (pages mapped as they are first touched)
        steps = FusedSteps(m, lossc.SGD(0.1), bound, 64)
        order = np.arange(n, dtype=np.int64)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        steps.run(theta, order, 0, 8)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """) % FACTORS.format(U=1_000_000, I=100, F=8)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    table_pages = 1_000_000 * 8 * 8 // 4096
    # 8 steps of 64 samples touch at most 512 rows of P, a page each, faulted in twice
    # (a read maps the shared zero page, the first write its copy), and a few pages of
    # the steps' own buffers: about 1,000; a step over the whole table faults in every
    # page of it (and the dense gradient's: some 200,000 in all)
    assert int(out.stdout) < 4 * 8 * 64 < table_pages // 5
