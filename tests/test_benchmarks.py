"""The benchmark suite's own logic (benchmarks/): naming the CPU and one results section
per CPU, the streaming cases' bandwidth judged in the same case, the hand-derived
gradients the new workloads check lossc against, W8's steps and its cap on them, and W9's
rows for features lossc may gain (filled in by stand-ins here). Nothing here checks a
time."""
import numpy as np
import pytest

import lossc
from benchmarks import machine, results_file
from benchmarks.harness import Context, Impl, compare
from benchmarks.machine import Cpu

AMD_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2
"""

LEGACY = """\
# lossc benchmark results

Written by `python -m benchmarks.run` (`make bench`). Times are medians.

## Machine

- date: 2026-11-29 18:50 UTC
- CPU: Intel(R) Xeon(R) Processor, 2 cores, avx512f
- suite wall time: 42 s

## Targets

| target | measured | required | met | detail |
| --- | --- | --- | --- | --- |
| W1 value_and_grad vs JAX jit | 9.34x faster | >= 4x | met | lossc 1.21 us |

## Notes

- Single-thread figures: every library on one thread.
"""


# ---------------------------------------------------------------- the CPU

def test_cpuinfo_names_model_vendor_family_and_simd():
    cpu = machine.parse_cpuinfo(AMD_CPUINFO)
    assert (cpu.name, cpu.vendor, cpu.family, cpu.model) == ("AMD EPYC", "AuthenticAMD", 26, 2)
    # the first processor's flags only; AVX-512 BF16 is not among the features reported
    assert cpu.features == ("AVX2", "FMA", "AVX-512F", "AVX-512DQ", "AVX-512BW", "AVX-512VL")
    assert cpu.describe() == ("AMD EPYC (AuthenticAMD, family 26, model 2; AVX2, FMA, "
                              "AVX-512F, AVX-512DQ, AVX-512BW, AVX-512VL)")
    assert Cpu.from_key(cpu.key()) == Cpu("AMD EPYC", "AuthenticAMD", 26, 2)


def test_cpus_differ_by_family_and_model_when_both_are_known():
    zen5 = Cpu("AMD EPYC", "AuthenticAMD", 26, 2)
    assert zen5.same_as(Cpu("AMD EPYC", "AuthenticAMD", 26, 2))
    assert not zen5.same_as(Cpu("AMD EPYC", "AuthenticAMD", 25, 17))
    assert not zen5.same_as(Cpu("AMD EPYC", "GenuineIntel", 26, 2))
    # an old report recorded no family or model: the name decides
    assert zen5.same_as(Cpu("AMD EPYC", "AuthenticAMD"))


# ---------------------------------------------------------------- results.md

def amd_section(date="2026-12-06", figure="1.5x"):
    return results_file.Section.new(Cpu("AMD EPYC", "AuthenticAMD", 26, 2), date,
                                    ["### Targets", "", f"| W7 | {figure} |"])


def test_a_run_on_another_cpu_keeps_the_earlier_cpus_figures():
    text = results_file.merge(LEGACY, amd_section())
    sections = results_file.parse(text)
    assert [s.cpu.vendor for s in sections] == ["AuthenticAMD", "GenuineIntel"]
    intel = "\n".join(sections[1].lines)
    # the old run whole, its parts now under its CPU's heading
    assert "| W1 value_and_grad vs JAX jit | 9.34x faster | >= 4x | met | lossc 1.21 us |" in intel
    assert "### Machine" in intel and "- suite wall time: 42 s" in intel
    assert "Written by `python -m benchmarks.run`" in intel
    assert sections[1].lines[0] == ("## Intel(R) Xeon(R) Processor (GenuineIntel): run of "
                                    "2026-11-29")
    assert "## AMD EPYC (AuthenticAMD, family 26, model 2): run of 2026-12-06" in text


def test_a_run_replaces_its_own_cpus_section_only():
    text = results_file.merge(results_file.merge(LEGACY, amd_section()),
                              amd_section("2026-12-07", "2.5x"))
    assert text.count("## AMD EPYC") == 1
    assert "| W7 | 2.5x |" in text and "| W7 | 1.5x |" not in text
    assert "run of 2026-12-07" in text and "9.34x faster" in text
    # and a new Intel run, family and model known, takes the place of the old one
    intel = results_file.Section.new(Cpu("Intel(R) Xeon(R) Processor", "GenuineIntel", 6, 143),
                                     "2026-12-08", ["new intel figures"])
    text = results_file.merge(text, intel)
    sections = results_file.parse(text)
    assert len(sections) == 2 and "9.34x faster" not in text
    assert "new intel figures" in text and "| W7 | 2.5x |" in text
    assert results_file.merge(text, intel) == text          # stable


def test_a_results_file_the_suite_did_not_write_is_not_overwritten(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("my own notes\n")
    with pytest.raises(ValueError, match="not overwritten"):
        results_file.write(str(path), amd_section())
    assert path.read_text() == "my own notes\n"
    fresh = tmp_path / "new.md"
    results_file.write(str(fresh), amd_section())
    assert results_file.parse(fresh.read_text())[0].cpu.family == 26


# ---------------------------------------------------------------- streaming at bandwidth

def quiet_ctx():
    ctx = Context(quick=True, threads=1)
    ctx.log = lambda msg="": None
    return ctx


def test_bandwidth_target_is_judged_against_the_sum_timed_with_the_case():
    from benchmarks.common import bandwidth_target
    from benchmarks.harness import Row, Stat

    def row(impl, seconds):
        return Row("W2", "case", impl, stat=Stat(seconds, seconds, seconds, 1, 3), gbytes=1.0)
    ctx = quiet_ctx()
    ctx.bandwidth = {1: 100.0}                   # the suite's first probe: far off now
    rows = {"lossc value_and_grad": row("lossc value_and_grad", 0.11),
            "numpy sum of X (read bandwidth)": row("numpy sum of X (read bandwidth)", 0.1)}
    bandwidth_target(ctx, "share", "W2", "case", rows, "lossc value_and_grad", 1, 0.85)
    t = ctx.targets[-1]
    assert t.met is True and t.measured.startswith("91% (9.1 of 10.0 GB/s)")
    # without its own sum the case falls back to the probe, and says so
    del rows["numpy sum of X (read bandwidth)"]
    bandwidth_target(ctx, "share", "W2", "case", rows, "lossc value_and_grad", 1, 0.85)
    t = ctx.targets[-1]
    assert t.met is False and "first probe" in t.detail
    bandwidth_target(ctx, "share", "W2", "case", {}, "lossc value_and_grad", 1, 0.85)
    assert ctx.targets[-1].met is None and ctx.targets[-1].measured == "n/a"


def test_read_bandwidth_row_is_timed_but_not_checked():
    from benchmarks.common import read_bandwidth_impl
    X = np.arange(4096.0).reshape(64, 64)
    ctx = quiet_ctx()
    lossc_like = Impl("lossc", lambda: None, lambda o: (1.0, {"w": np.ones(2)}))
    rows = ctx.run_case("stream", "case", [lossc_like, read_bandwidth_impl(X),
                                           read_bandwidth_impl(X, 2)],
                        samples=3, sample_s=0.0)
    for name, r in rows.items():
        if name.startswith("numpy sum of X"):
            assert r.check == "-" and r.gbps > 0
    assert not ctx.failures
    # the two-thread sum adds up the same numbers
    assert read_bandwidth_impl(X, 2).call() == X.sum()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bits", [None, 256, 64])
def test_fma_peak_loop_computes_its_chains_and_counts_their_operations(dtype, bits):
    """The peak's loop runs its FMAs (their sum is stored: none is dead code) on vectors
    of the width asked for, and the figure counts two operations per lane and FMA."""
    import ctypes

    from lossc.codegen import jit
    from lossc.compiler import host_vector_bits
    real = {"float32": "float", "float64": "double"}[dtype]
    code = jit.NativeCode(jit.compile_ir(machine.fma_loop_ir(real, 4, chains=3)),
                          ("fma_loop",))
    loop = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
        code.addresses["fma_loop"])
    out = (ctypes.c_float if real == "float" else ctypes.c_double)()
    loop(3, ctypes.addressof(out))
    np_real = np.float32 if real == "float" else np.float64
    a = np_real(0)
    for _ in range(3):
        a = np_real(a * np_real(1 + 2.0 ** -23) + np_real(2.0 ** -10))
    assert out.value == 3 * a
    peak = machine.fma_peak(dtype, reps=1, iterations=1000, bits=bits)
    size = 4 if dtype == "float32" else 8
    assert peak.bits == (bits or host_vector_bits()) and peak.bits % (8 * size) == 0
    assert peak.gflops > 0 and dtype in peak.describe()


def test_the_speed_probe_and_the_empty_call_are_native_calls_that_measure():
    """W1's machine limit calls native code that returns at once (0, as lossc's units
    return OK); the host speed probe times the FMA loop fma_peak measures, its
    operations counted the same way (two a lane and FMA)."""
    from lossc.compiler import host_vector_bits
    assert machine.EmptyCall()() == 0
    probe = machine.SpeedProbe()
    lanes = host_vector_bits() // 64
    assert probe._flops == probe.ITERATIONS * machine.FMA_CHAINS * lanes * 2
    assert 0 < probe.gflops(reps=2) < 1e4


def test_w7_goes_on_without_the_fma_peak_where_it_cannot_be_measured(monkeypatch):
    from benchmarks import w7_mnist as w7

    def fails(dtype):
        raise RuntimeError("no code generation here")
    monkeypatch.setattr(machine, "fma_peak", fails)
    ctx, said = quiet_ctx(), []
    ctx.log = said.append
    w7.measure_peaks(ctx)
    assert ctx.fma_peak == {} and len(said) == len(w7.DTYPES)
    assert all("not measured (RuntimeError: no code generation here)" in s for s in said)
    w7.peak_share(ctx, "c", {}, ctx.fma_peak.get("float32"), 1.0)
    assert ctx.rows == [] and ctx.targets == []


def test_w7_rows_give_lossc_and_jax_their_share_of_the_fma_peak():
    from benchmarks import w7_mnist as w7
    from benchmarks.harness import Row
    ctx = quiet_ctx()
    rows = {"lossc value_and_grad": Row("W7", "c", "lossc value_and_grad", seconds=2.0,
                                        gflop=100.0),
            "jax jit": Row("W7", "c", "jax jit", seconds=4.0, gflop=100.0, note="pinned")}
    w7.peak_share(ctx, "c", rows, machine.FmaPeak("float32", 512, 100.0), 100.0)
    peak_row = ctx.rows[-1]
    assert peak_row.impl == w7.PEAK_IMPL and peak_row.time == 1.0
    assert rows["lossc value_and_grad"].note == "50% of the FMA peak"
    assert rows["jax jit"].note == "pinned; 25% of the FMA peak"
    assert ctx.targets[-1].measured == "lossc 50%, JAX 25%"
    assert ctx.targets[-1].met is None and ctx.targets[-1].required == "(figure)"


# ---------------------------------------------------------------- W7, W8: the hand-derived peers

def test_w7_gradient_by_hand_matches_lossc():
    from benchmarks import w7_mnist as w7
    m = lossc.compile(w7.SRC, dims={"H": 16})
    theta = w7.make_theta(m, 16)
    X, y = w7.make_data(37, "float64")
    v, g = m.value_and_grad(theta, x=X, y=y)
    err, where = compare(v, g, *w7.numpy_vg(theta, X, y))
    assert err <= 1e-12, where
    # the GEMM row computes the products the FLOP count counts: five, of these sizes
    B, H, D, K = 37, 16, w7.D, w7.K
    assert w7.flops(B, H) == 2 * (B * D * H + B * H * K + K * B * H + B * K * H + H * B * D)
    assert w7.gemm_call(theta, X)().shape == (H, D)


def test_w8_gradient_by_hand_adds_repeated_rows_and_matches_lossc():
    from benchmarks import w8_factorization as w8
    rows = 20
    m = lossc.compile(w8.SRC, dims={"U": rows, "I": rows})
    rng = np.random.default_rng(0)
    P, Q = rng.normal(0, 0.1, (rows, w8.F)), rng.normal(0, 0.1, (rows, w8.F))
    u = rng.integers(0, rows, 64)
    i = rng.integers(0, rows, 64)
    r = rng.normal(3, 1, 64)
    assert len(set(u.tolist())) < len(u)          # rows repeat in the batch
    v, g = m.value_and_grad({"P": P, "Q": Q}, u=u, i=i, r=r)
    err, where = compare(v, g, *w8.numpy_vg(P, Q, u, i, r))
    assert err <= 1e-12, where


def test_w8_caps_lossc_steps_by_time_and_still_runs_the_peer():
    from benchmarks.w8_factorization import alternate
    calls = []
    ours, theirs = alternate(lambda: calls.append("lossc"), lambda: calls.append("peer"),
                             budget_s=0.0, max_steps=25, min_peer=3)
    # the budget is spent at once: one step (never none), the peer its minimum, in turns
    assert (len(ours), len(theirs)) == (1, 3)
    assert calls[:2] == ["lossc", "peer"]
    ours, theirs = alternate(lambda: None, lambda: None, budget_s=60.0, max_steps=5,
                             min_peer=2)
    assert (len(ours), len(theirs)) == (5, 5)
    ours, theirs = alternate(lambda: None, None, budget_s=60.0, max_steps=4, min_peer=3)
    assert (len(ours), theirs) == (4, [])


def sgd_by_hand(P, Q, u, i, r, order, count, bs):
    """count SGD steps over the batches of `order` in turn, from its first: NumPy."""
    from benchmarks import w8_factorization as w8
    P, Q = P.copy(), Q.copy()
    for k in range(count):
        idx = order[(k * bs) % len(order):][:bs]
        _, g = w8.numpy_vg(P, Q, u[idx], i[idx], r[idx])
        P -= w8.LR * g["P"]
        Q -= w8.LR * g["Q"]
    return np.concatenate([P.ravel(), Q.ravel()])


def test_w8_lossc_steps_are_sgd_and_an_epoch_wraps_round_the_order(monkeypatch):
    from benchmarks import w8_factorization as w8
    monkeypatch.setattr(w8, "N", 8 * w8.BS)           # an epoch of 8 batches
    rows = 50
    m = lossc.compile(w8.SRC, dims={"U": rows, "I": rows})
    u, i, r = w8.make_ratings(rows)
    P, Q = w8.make_tables(rows)
    order = w8.epoch_order()
    ours = w8.LosscSteps(m, P, Q, u, i, r, order)
    for _ in range(3):
        ours.step()
    ours.epoch()            # batches 3..7, then 0..2
    assert ours.k == 11
    want = sgd_by_hand(P, Q, u, i, r, order, 11, w8.BS)
    assert np.max(np.abs(ours.theta - want)) <= 1e-12 * np.max(np.abs(want))


def test_w8_epoch_is_measured_whole_when_it_fits_and_else_labelled_extrapolated(monkeypatch):
    from benchmarks import w8_factorization as w8
    monkeypatch.setattr(w8, "N", 4 * w8.BS)
    monkeypatch.setattr(w8, "EPOCH_ROWS", 40)
    for budget, whole in ((1e9, True), (0.0, False)):
        monkeypatch.setattr(w8, "EPOCH_BUDGET_S", budget)
        ctx = quiet_ctx()
        w8.epoch_case(ctx, 0.0)
        assert not ctx.failures, ctx.failures
        epoch = [row for row in ctx.rows if "one epoch" in row.case]
        assert len(epoch) == 2 and epoch[0].time > 0        # lossc's, and PyTorch's n/a
        assert ("EXTRAPOLATED" in epoch[0].note) is not whole
        assert ("(extrapolated)" in epoch[0].impl) is not whole
        assert ("whole epochs" in epoch[0].note) is whole


# ---------------------------------------------------------------- W9: rows for features to come

def rows_of(ctx, workload):
    return {r.impl: r for r in ctx.rows if r.workload == workload}


class WithoutHvp:
    """A compiled model as one without a Hessian-vector product."""

    def __init__(self, m):
        self._m = m

    def __getattr__(self, name):
        if name == "hvp":
            raise AttributeError(name)
        return getattr(self._m, name)


def without_second_order(monkeypatch, w9):
    """lossc as it is before LBFGS, NewtonCG and model.hvp (whether or not it has them)."""
    for name in ("LBFGS", "NewtonCG"):
        # (None, not deleted: lossc provides its training names on first use)
        monkeypatch.setattr(lossc, name, None, raising=False)
    real = w9.compile_model
    monkeypatch.setattr(w9, "compile_model", lambda *a, **kw: WithoutHvp(real(*a, **kw)))


def test_w9_without_second_order_features_says_so(monkeypatch):
    from benchmarks import w9_second_order as w9
    without_second_order(monkeypatch, w9)
    ctx = quiet_ctx()
    w9.run(ctx, n=2000)
    rows = rows_of(ctx, "W9")
    assert rows["scipy L-BFGS-B on lossc's objective"].time > 0
    assert rows["scipy L-BFGS-B on numpy's objective (by hand)"].check.startswith("ok")
    for impl in ("lossc.LBFGS (lossc.train, full batch)", "lossc model.hvp",
                 "lossc.NewtonCG (lossc.train, full batch)", "scipy Newton-CG with model.hvp"):
        assert rows[impl].note == w9.NOT_AVAILABLE and rows[impl].time is None
    assert not ctx.failures


class GradientDescent(lossc.SGD):
    """A stand-in for a full-batch second-order optimizer: plain gradient descent."""

    def __init__(self):
        super().__init__(lr=1.0)


class WithHvp:
    """A compiled model with a Hessian-vector product (by hand, or one that fails)."""

    def __init__(self, m, hvp):
        self._m, self._hvp = m, hvp

    def __getattr__(self, name):
        return getattr(self._m, name)

    def hvp(self, theta, v, **inputs):
        return self._hvp(theta, v, inputs["x"], inputs["y"])


def test_w9_rows_fill_in_when_lossc_has_the_features(monkeypatch):
    from benchmarks import w9_second_order as w9
    monkeypatch.setattr(lossc, "LBFGS", GradientDescent, raising=False)
    monkeypatch.setattr(lossc, "NewtonCG", None, raising=False)
    real = w9.compile_model
    monkeypatch.setattr(w9, "compile_model", lambda *a, **kw: WithHvp(real(*a, **kw),
                                                                      w9.numpy_hvp))
    ctx = quiet_ctx()
    w9.run(ctx, n=2000)
    assert not ctx.failures, ctx.failures
    rows = rows_of(ctx, "W9")
    lbfgs = rows["lossc.LBFGS (lossc.train, full batch)"]
    assert lbfgs.time > 0 and lbfgs.check.startswith("ok") and "iterations" in lbfgs.note
    assert rows["lossc.NewtonCG (lossc.train, full batch)"].note == w9.NOT_AVAILABLE
    hvp = rows["lossc model.hvp"]
    assert hvp.time > 0 and hvp.check.startswith("ok")
    assert rows["scipy Newton-CG with model.hvp"].check.startswith("ok")
    targets = {t.name: t for t in ctx.targets}
    assert targets["W9 HVP cost / gradient cost per sample"].measured.endswith("x")
    # the stand-in reaches L-BFGS-B's optimum; its time is judged against L-BFGS-B's
    assert targets["W9 lossc.LBFGS reaches L-BFGS-B's optimum"].met is True
    assert targets["W9 lossc.LBFGS time / L-BFGS-B's on lossc's objective"].met is not None
    assert targets["W9 lossc.NewtonCG reaches L-BFGS-B's optimum"].met is None


def test_w9_targets_wait_for_the_features(monkeypatch):
    from benchmarks import w9_second_order as w9
    without_second_order(monkeypatch, w9)
    ctx = quiet_ctx()
    w9.run(ctx, n=2000)
    targets = {t.name: t for t in ctx.targets}
    for name in ("W9 lossc.LBFGS reaches L-BFGS-B's optimum",
                 "W9 lossc.LBFGS time / L-BFGS-B's on lossc's objective",
                 "W9 HVP cost / gradient cost per sample"):
        assert targets[name].measured == w9.NOT_AVAILABLE and targets[name].met is None
        assert not targets[name].required.startswith("(")       # a target, not a figure


def test_w9_a_wrong_or_failing_hvp_is_reported_not_fatal(monkeypatch):
    from benchmarks import w9_second_order as w9
    real = w9.compile_model

    def doubled(theta, v, X, y):
        return {k: 2 * a for k, a in w9.numpy_hvp(theta, v, X, y).items()}

    def broken(theta, v, X, y):
        raise RuntimeError("no Hessian today")
    for hvp, finding in ((doubled, "differs from the product by hand"),
                         (broken, "raised RuntimeError")):
        monkeypatch.setattr(w9, "compile_model", lambda *a, **kw: WithHvp(real(*a, **kw), hvp))
        ctx = quiet_ctx()
        w9.run(ctx, n=2000)
        assert any(finding in f for f in ctx.failures), ctx.failures
        assert rows_of(ctx, "W9")["scipy L-BFGS-B on lossc's objective"].time > 0


def test_w8_step_case_times_the_first_step_only_when_it_alone_is_over_the_cap(monkeypatch):
    from benchmarks import w8_factorization as w8
    monkeypatch.setattr(w8, "N", 4 * w8.BS)
    monkeypatch.setattr(w8, "MAX_STEPS", 3)
    for budget, note, count in ((0.0, "the first (alone over the time cap)", 1),
                                (1e9, "3 steps (capped by time", 3)):
        ctx = quiet_ctx()
        median = w8.step_case(ctx, 40, budget)
        row, = [r for r in ctx.rows if r.impl == "lossc SGD step"]
        assert median > 0 and row.stat.samples == count and note in row.note
        assert not ctx.failures


def test_w10_writes_its_stack_chunk_by_chunk_and_reads_it_back(tmp_path):
    import os

    from benchmarks import w10_dask
    from lossc.optim.chunk_files import file_chunks
    w10_dask.write_stack(str(tmp_path), 1000, 300)
    data = w10_dask.read_stack(str(tmp_path))
    assert data["x"].shape == (1000, w10_dask.D) and set(np.unique(data["y"])) <= {0.0, 1.0}
    m = lossc.compile(w10_dask.SRC)
    assert file_chunks(tmp_path, m).sizes == (300, 300, 300, 100)
    assert w10_dask.peak_rss(os.getpid()) > data["x"].nbytes
