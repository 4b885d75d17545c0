"""The machine and the peers: CPU, versions, BLAS kernel, measured read bandwidth,
and loading JAX and PyTorch when they are installed."""
from __future__ import annotations

import datetime
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np


# the SIMD features that decide how lossc's code is vectorized, as /proc/cpuinfo (and
# lscpu) spell them, and as the report names them
SIMD_FEATURES = (("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512F"),
                 ("avx512dq", "AVX-512DQ"), ("avx512bw", "AVX-512BW"),
                 ("avx512vl", "AVX-512VL"))


@dataclass(frozen=True)
class Cpu:
    """The processor a run measured: its model name as lscpu prints it, the vendor, the
    family and model numbers (None where not known) and which SIMD_FEATURES it has.
    A virtual machine may show a generic model name ("AMD EPYC"): family and model then
    tell its generations apart."""
    name: str
    vendor: str
    family: Optional[int] = None
    model: Optional[int] = None
    features: tuple = ()

    def key(self) -> str:
        """One line naming the CPU for results.md's sections ("?" for a number not
        known)."""
        return "|".join([self.vendor, self.name, _num(self.family), _num(self.model)])

    @classmethod
    def from_key(cls, key: str) -> "Cpu":
        vendor, name, family, model = (key.split("|") + ["?", "?"])[:4]
        return cls(name.strip(), vendor.strip(), _int_or_none(family), _int_or_none(model))

    def same_as(self, other: "Cpu") -> bool:
        """The same CPU model: vendor and name equal, and family and model equal where
        both are known (an old report recorded neither)."""
        def agree(a, b):
            return a is None or b is None or a == b
        return (self.vendor == other.vendor and self.name == other.name
                and agree(self.family, other.family) and agree(self.model, other.model))

    def describe(self) -> str:
        """The CPU as a reader wants it named: 'AMD EPYC (AuthenticAMD, family 26,
        model 2; AVX2, FMA, AVX-512F, ...)'."""
        ident = [self.vendor]
        if self.family is None and self.model is None:
            ident.append("family and model not recorded")
        else:
            ident.append(f"family {_num(self.family)}, model {_num(self.model)}")
        simd = "; " + ", ".join(self.features) if self.features else ""
        return f"{self.name} ({', '.join(ident)}{simd})"


def _num(v: Optional[int]) -> str:
    return "?" if v is None else str(v)


def _int_or_none(s: str) -> Optional[int]:
    s = s.strip()
    return int(s) if s.isdigit() else None


def parse_cpuinfo(text: str) -> Cpu:
    """The first processor of /proc/cpuinfo's text."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:          # the end of the first processor's block
                break
            continue
        k, _, v = line.partition(":")
        fields.setdefault(k.strip(), v.strip())
    flags = set(fields.get("flags", "").split())
    return Cpu(name=fields.get("model name") or platform.processor() or platform.machine(),
               vendor=fields.get("vendor_id", "unknown vendor"),
               family=_int_or_none(fields.get("cpu family", "")),
               model=_int_or_none(fields.get("model", "")),
               features=tuple(label for flag, label in SIMD_FEATURES if flag in flags))


def this_cpu() -> Cpu:
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return Cpu(platform.processor() or platform.machine(), "unknown vendor")


def blas_info() -> str:
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    parts = []
    for d in threadpoolctl.threadpool_info():
        if d.get("user_api") == "blas":
            parts.append(f"{d.get('internal_api')} {d.get('version')} "
                         f"({d.get('architecture')} kernel, {d.get('num_threads')} threads)")
    return "; ".join(parts) or "none found"


def versions(ctx) -> dict:
    import llvmlite
    import lossc
    v = {"python": platform.python_version(), "numpy": np.__version__,
         "llvmlite": llvmlite.__version__, "lossc": getattr(lossc, "__version__", "?")}
    if ctx.jax is not None:
        import jaxlib
        v["jax"] = ctx.jax.__version__ + f" (jaxlib {jaxlib.__version__})"
    else:
        v["jax"] = ctx.jax_why if ctx.jax_why == "not installed" else f"n/a ({ctx.jax_why})"
    if ctx.torch is not None:
        v["torch"] = ctx.torch.__version__
    else:
        v["torch"] = (ctx.torch_why if ctx.torch_why == "not installed"
                      else f"n/a ({ctx.torch_why})")
    return v


def machine_lines(ctx) -> list:
    v = versions(ctx)
    env = {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "XLA_FLAGS")}
    return [
        f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"CPU: {this_cpu().describe()}, {os.cpu_count()} cores",
        f"python {v['python']}, numpy {v['numpy']}, llvmlite {v['llvmlite']}, "
        f"lossc {v['lossc']}, jax {v['jax']}, torch {v['torch']}",
        f"BLAS: {blas_info()}",
        "threads: " + ", ".join(f"{k}={val!r}" for k, val in env.items())
        + (", torch.set_num_threads(1)" if ctx.torch is not None else "")
        + f"; OPENBLAS_CORETYPE {'unset' if 'OPENBLAS_CORETYPE' not in os.environ else 'SET'}",
    ]


# ---------------------------------------------------------------- peers


def load_jax():
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
        import jax.numpy as jnp
        jnp.zeros(1).block_until_ready()
        return jax, ""
    except ImportError:
        return None, "not installed"
    except Exception as e:     # broken: the suite goes on without it
        return None, f"{type(e).__name__}: {e}"


def load_torch(threads: int = 1):
    try:
        import torch
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        return torch, ""
    except ImportError:
        return None, "not installed"
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- bandwidth


def read_bandwidth(nbytes: int, threads: int, reps: int) -> float:
    """GB/s of a one-pass numpy sum over a large float64 array (split into one
    contiguous part per thread; numpy releases the GIL in the reduction)."""
    a = np.ones(nbytes // 8)
    parts = np.array_split(a, threads)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    best = []
    try:
        for _ in range(reps + 1):
            t0 = time.perf_counter_ns()
            if pool is None:
                s = float(a.sum())
            else:
                s = sum(pool.map(lambda p: float(p.sum()), parts))
            best.append((time.perf_counter_ns() - t0) * 1e-9)
            assert s == a.size
    finally:
        if pool is not None:
            pool.shutdown()
    return a.nbytes / 1e9 / float(np.median(best[1:]))


# ---------------------------------------------------------------- other load

class CpuMonitor:
    """How much CPU other processes used while a stretch of the run went on (in cores,
    averaged): the machine's busy time from /proc/stat less this process's and its
    children's. A busy neighbour slows everything and the multi-thread figures most."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def snapshot(self):
        try:
            with open("/proc/stat") as f:
                parts = f.readline().split()[1:]
            vals = [int(x) for x in parts]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            busy = (sum(vals[:8]) - idle) / self.hz
        except (OSError, ValueError, IndexError):
            busy = None
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()

    @staticmethod
    def others(a, b) -> "float | None":
        """Cores used by other processes between two snapshots."""
        if a[0] is None or b[0] is None or b[2] <= a[2]:
            return None
        return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (b[2] - a[2]))


def loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def wait_quiet(mon: CpuMonitor, max_s: float, window_s: float = 0.5,
               threshold: float = 0.15) -> tuple:
    """Wait until other processes use under `threshold` cores over a window, at most
    max_s seconds. Returns (seconds waited, their last use in cores or None)."""
    start = time.perf_counter()
    used = None
    while True:
        a = mon.snapshot()
        time.sleep(window_s)
        used = mon.others(a, mon.snapshot())
        waited = time.perf_counter() - start
        if used is None or used < threshold or waited >= max_s:
            return waited, used


# ---------------------------------------------------------------- arithmetic peak

FMA_CHAINS = 12     # independent FMA chains: more than 2 units x 4 cycles of latency
                    # keep busy, few enough for AVX2's 16 registers (with 2 constants)
FMA_ITERATIONS = 2_000_000     # per timed call: some 10 ms at any width


def fma_loop_ir(real: str, lanes: int, chains: int = FMA_CHAINS) -> str:
    """LLVM IR of `void fma_loop(i64 n, T* out)`: n iterations of `chains` independent
    vector FMAs a <- a * c + d (c slightly above 1: no overflow, no subnormal in a
    run), their sum stored to `out` so that none is dead code."""
    v = f"<{lanes} x {real}>"
    fma = f"@llvm.fma.v{lanes}{'f32' if real == 'float' else 'f64'}"

    def splat(hexval):
        return "<" + ", ".join([f"{real} {hexval}"] * lanes) + ">"
    # 1 + 2^-23 and 2^-10, exact in either dtype
    scale, shift = splat("0x3FF0000020000000"), splat("0x3F50000000000000")
    lines = [f"declare {v} {fma}({v}, {v}, {v})",
             f"define void @fma_loop(i64 %n, {real}* %out) {{",
             "entry:", "  br label %loop", "loop:",
             "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    lines += [f"  %a{c} = phi {v} [zeroinitializer, %entry], [%b{c}, %loop]"
              for c in range(chains)]
    lines += [f"  %b{c} = call {v} {fma}({v} %a{c}, {v} {scale}, {v} {shift})"
              for c in range(chains)]
    lines += ["  %i1 = add i64 %i, 1", "  %more = icmp slt i64 %i1, %n",
              "  br i1 %more, label %loop, label %done", "done:"]
    total = "%b0"
    for c in range(1, chains):
        lines.append(f"  %s{c} = fadd {v} {total}, %b{c}")
        total = f"%s{c}"
    lines += [f"  %e = extractelement {v} {total}, i32 0", f"  store {real} %e, {real}* %out",
              "  ret void", "}"]
    return "\n".join(lines) + "\n"


class FmaLoop:
    """The loop of fma_loop_ir compiled by LLVM for the host CPU, as lossc's own code
    is, for `dtype` on the widest vectors lossc uses on this CPU (or `bits`), timed on
    demand: what fma_peak and SpeedProbe measure."""

    def __init__(self, dtype: str = "float64", bits: Optional[int] = None):
        import ctypes

        from lossc.codegen import jit
        from lossc.compiler import host_vector_bits
        real, size = {"float32": ("float", 4), "float64": ("double", 8)}[dtype]
        self.lanes = max(1, (bits or host_vector_bits()) // (8 * size))
        self.bits = self.lanes * size * 8
        self._code = jit.NativeCode(jit.compile_ir(fma_loop_ir(real, self.lanes)),
                                    ("fma_loop",))
        self._loop = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
            self._code.addresses["fma_loop"])
        self._out = ctypes.create_string_buffer(8)

    def flops(self, iterations: int) -> int:
        """Operations in a call of `iterations` iterations: two a lane and FMA."""
        return iterations * FMA_CHAINS * self.lanes * 2

    def best_seconds(self, iterations: int, reps: int) -> float:
        """The fastest of `reps` calls of `iterations` iterations."""
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            self._loop(iterations, self._out)
            best = min(best, (time.perf_counter_ns() - t0) * 1e-9)
        return best


class SpeedProbe:
    """How fast the host runs fixed work right now: the FMA loop of fma_peak (float64,
    the widest vectors lossc uses), compiled once and timed for about a millisecond,
    the best of a few. On a shared virtual machine the same code runs slower when the
    host is busy, which neither the load average nor steal time shows; a probe before
    each workload says how its figures compare with the rest of the run's."""

    ITERATIONS = 100_000

    def __init__(self):
        self._loop = FmaLoop("float64")
        self._flops = self._loop.flops(self.ITERATIONS)

    def gflops(self, reps: int = 5) -> float:
        return self._flops / self._loop.best_seconds(self.ITERATIONS, reps) / 1e9


class EmptyCall:
    """The machine's floor for one call into native code from Python: a function
    compiled by LLVM for the host CPU that returns at once, with the prototype of
    lossc's units (int f(void *frame)), called through ctypes as a prepared call calls
    its unit. Calling it is what no call path of lossc can go below."""

    def __init__(self):
        import ctypes

        from lossc.codegen import jit
        ir_text = "define i32 @empty(i64* %frame) {\n  ret i32 0\n}\n"
        self._code = jit.NativeCode(jit.compile_ir(ir_text), ("empty",))
        self.fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(
            self._code.addresses["empty"])
        self._frame = ctypes.create_string_buffer(8)
        self.address = ctypes.addressof(self._frame)

    def __call__(self) -> int:
        return self.fn(self.address)


@dataclass(frozen=True)
class FmaPeak:
    """The machine's arithmetic limit for a dtype: GFLOP/s of independent vector FMAs
    (two operations each) at `bits` bits, on the thread that measured it."""
    dtype: str
    bits: int
    gflops: float

    def describe(self) -> str:
        return (f"{self.dtype}: {self.gflops:.1f} GFLOP/s ({FMA_CHAINS} chains of "
                f"{self.bits}-bit FMAs)")


def fma_peak(dtype: str, reps: int = 5, iterations: int = FMA_ITERATIONS,
             bits: Optional[int] = None) -> FmaPeak:
    """The FMA peak of one core for `dtype` on the widest vectors lossc uses on this CPU
    (or `bits`): a loop of FMA_CHAINS independent vector FMAs compiled by LLVM for the
    host CPU, as lossc's own code is, the best of `reps` timed calls."""
    loop = FmaLoop(dtype, bits)
    loop.best_seconds(1000, 1)          # (a first call, untimed)
    best = loop.best_seconds(iterations, reps)
    return FmaPeak(dtype, loop.bits, loop.flops(iterations) / best / 1e9)
