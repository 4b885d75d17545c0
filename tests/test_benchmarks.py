"""The benchmark suite's own logic (benchmarks/): naming the CPU and one results section
per CPU, the streaming cases' bandwidth judged in the same case. Nothing here checks a
time."""
import numpy as np
import pytest

from benchmarks import machine, results_file
from benchmarks.harness import Context, Impl
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
