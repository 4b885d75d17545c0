"""Run the benchmark suite: `make bench`, or

    python -m benchmarks.run [--quick] [--only W2,W5] [--threads 2] [--output FILE]

Every workload of BENCHMARKS.md runs side by side in this one process against numpy
written by hand and, when installed (`pip install -e .[peers]`), JAX and PyTorch. Each
peer's value and gradient is checked against lossc's before it is timed. The table has
medians, the ratio of lossc's time to each peer's, GB/s for the streaming workloads next
to this machine's read bandwidth measured in the same run, GFLOP/s for W7 next to NumPy's
matrix-multiply rate at its products, and the targets with whether each is met. A full
run also writes its CPU's section of benchmarks/results.md (benchmarks/results_file.py:
the sections of other CPUs stay). W8 runs lossc's epoch whole when its first steps say
it fits in a few seconds, and otherwise extrapolates it from steps capped by time, and
says so (see benchmarks/w8_factorization.py); the whole suite takes a few minutes.

Every library is pinned to one thread for the per-call figures (the variables below are
set before numpy, JAX or PyTorch is imported); the large batches are also run with
`--threads` threads (default 2). JAX's thread count is fixed when XLA starts, so its
multi-thread figure comes from a child process.
"""
from __future__ import annotations

import os
import sys


def _argv_threads(argv) -> int:
    for k, a in enumerate(argv):
        if a == "--threads" and k + 1 < len(argv):
            return int(argv[k + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 2


_CHILD = "--child" in sys.argv
_N = _argv_threads(sys.argv) if _CHILD else 1
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(_N)
_xla = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                if "multi_thread_eigen" not in f and "intra_op_parallelism" not in f)
os.environ["XLA_FLAGS"] = (_xla + (" --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1" if _N == 1 else "")).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from benchmarks import machine, results_file  # noqa: E402
from benchmarks.harness import (HEAD, Context, Row, annotate, md_table,  # noqa: E402
                                table_cells, target_cells, text_table)

WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "compile", "W7", "W8", "W9", "stream",
             "W10", "sklearn"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results.md")
# a workload whose speed probe ran below this share of the run's best has its targets
# marked as measured on a slow host (machine.SpeedProbe)
SLOW_HOST = 0.85


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a fast smoke run: smaller large batches, fewer repetitions and "
                        "epochs (targets indicative only)")
    p.add_argument("--only", default="",
                   help=f"comma-separated workloads to run, of {','.join(WORKLOADS)}")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for the large-batch figures (1: skip them); default 2")
    p.add_argument("--no-peers", action="store_true", help="numpy only: skip JAX and PyTorch")
    p.add_argument("--no-pin", action="store_true",
                   help="don't pin the single-thread figures to one core")
    p.add_argument("--max-wait", type=float, default=20.0,
                   help="before each workload, wait up to this many seconds for other "
                        "processes to leave the CPUs alone (0: don't); default 20")
    p.add_argument("--max-wait-total", type=float, default=60.0,
                   help="wait no more than this many seconds in all over the run (on a "
                        "machine that stays busy, the workloads then run without waiting); "
                        "default 60")
    p.add_argument("--output", default=None,
                   help=f"markdown report to write (default: {os.path.relpath(DEFAULT_OUTPUT)} "
                        "for a full run, none for --quick or --only)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def selected(args) -> list:
    if not args.only:
        return list(WORKLOADS)
    want = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    out = [w for w in WORKLOADS if w.lower() in want]
    unknown = [w for w in want if w not in [x.lower() for x in WORKLOADS]]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {WORKLOADS}")
    return out


def module_for(name: str):
    import importlib
    return importlib.import_module({
        "W1": "benchmarks.w1_seed", "W2": "benchmarks.w2_logistic",
        "W3": "benchmarks.w3_mlp", "W4": "benchmarks.w4_softmax",
        "W5": "benchmarks.w5_train", "W6": "benchmarks.w6_chain",
        "compile": "benchmarks.compile_time", "W7": "benchmarks.w7_mnist",
        "W8": "benchmarks.w8_factorization", "W9": "benchmarks.w9_second_order",
        "stream": "benchmarks.stream", "W10": "benchmarks.w10_dask",
        "sklearn": "benchmarks.sklearn_search"}[name])


# ---------------------------------------------------------------- the child process

def child_main(args) -> int:
    """JAX's large-batch figure at `--threads` threads (XLA's pool is sized at start)."""
    ctx = Context(quick=args.quick, threads=_N)
    cpus = os.environ.get("LOSSC_BENCH_CPUS")
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        except OSError:
            pass
    ctx.jax, ctx.jax_why = machine.load_jax()
    if ctx.jax is None:
        print("CHILD-JSON: " + json.dumps({"error": ctx.jax_why}))
        return 0
    try:
        res = module_for(selected(args)[0]).jax_child(ctx)
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}"}
    print("CHILD-JSON: " + json.dumps(res))
    return 0


def child_runner(args):
    def run(workload: str):
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", "--only", workload,
               "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return {"error": "child process timed out"}
        for line in reversed(p.stdout.splitlines()):
            if line.startswith("CHILD-JSON: "):
                return json.loads(line[len("CHILD-JSON: "):])
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child process failed: {tail}"[:150]}
    return run


# ---------------------------------------------------------------- the run

def bandwidth(ctx) -> None:
    nbytes = (256 if ctx.quick else 1024) * 2 ** 20
    reps = ctx.samples(7, 3)
    ctx.log(f"read bandwidth: one-pass numpy sum over {nbytes / 2 ** 30:.2f} GiB")
    for n in sorted({1, ctx.threads}):
        if n > 1:
            with ctx.all_cores():
                gbps = machine.read_bandwidth(nbytes, n, reps)
        else:
            gbps = machine.read_bandwidth(nbytes, n, reps)
        ctx.bandwidth[n] = gbps
        ctx.rows.append(Row("bandwidth", f"{n} thread{'s' if n > 1 else ''}",
                            "numpy sum (read bandwidth)", seconds=nbytes / 1e9 / gbps,
                            gbytes=nbytes / 1e9, note=f"{nbytes / 2 ** 30:.2f} GiB array"))
        ctx.log(f"  {n} thread(s): {gbps:.1f} GB/s")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child_main(args)
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    todo = selected(args)
    t_start = time.perf_counter()
    ctx = Context(quick=args.quick, threads=args.threads)
    ctx.child_runner = child_runner(args)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        # one core for the single-thread figures, set before JAX and PyTorch start
        # their threads (which inherit it); the multi-thread figures lift it
        ctx.cpus_all = set(os.sched_getaffinity(0))
        ctx.cpu_one = {min(ctx.cpus_all)}
        os.environ["LOSSC_BENCH_CPUS"] = ",".join(map(str, sorted(ctx.cpus_all)))
        os.sched_setaffinity(0, ctx.cpu_one)
    if args.no_peers:
        ctx.jax_why = ctx.torch_why = "skipped (--no-peers)"
    else:
        ctx.jax, ctx.jax_why = machine.load_jax()
        ctx.torch, ctx.torch_why = machine.load_torch(1)
    for name, mod, why in (("JAX", ctx.jax, ctx.jax_why), ("PyTorch", ctx.torch, ctx.torch_why)):
        if mod is None:
            ctx.log(f"{name}: n/a ({why})" + ("; install the peers with pip install -e "
                                               "'.[peers]'" if why == "not installed" else ""))
    info = machine.machine_lines(ctx)
    if ctx.cpu_one is not None:
        info.append(f"single-thread figures pinned to CPU {min(ctx.cpu_one)} "
                    f"(sched_setaffinity); the {args.threads}-thread figures use CPUs "
                    f"{','.join(map(str, sorted(ctx.cpus_all)))}")
    for line in info:
        ctx.log(line)
    ctx.log("")
    if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
        ctx.log("warning: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set and slow numpy; "
                "`make bench` unsets them")

    import lossc     # noqa: F401  (imported after the thread variables are set)
    mon = machine.CpuMonitor()
    probe = machine.SpeedProbe()
    speed = {}
    load_start = machine.loadavg()
    busy = {}
    spans = []
    waited_total = 0.0
    bw_first = next((w for w in todo if w in ("W2", "W3", "stream")), None)
    for name in todo:
        wait = min(args.max_wait, args.max_wait_total - waited_total)
        if wait > 0:
            waited, used = machine.wait_quiet(mon, wait)
            if waited > 1:
                waited_total += waited
                ctx.log(f"(waited {waited:.0f} s for a quiet machine before {name}"
                        + (f"; others still use {used:.2f} cores)" if used and used >= 0.15
                           else ")"))
        speed[name] = probe.gflops()
        a = mon.snapshot()
        try:
            if name == bw_first:        # the streaming workloads are judged against it
                bandwidth(ctx)
            module_for(name).run(ctx)
        except Exception as e:
            ctx.fail(f"{name} stopped: {type(e).__name__}: {e}")
            traceback.print_exc()
        b = mon.snapshot()
        busy[name] = mon.others(a, b)
        spans.append((a, b))
        if busy[name] is not None and busy[name] > 0.1:
            ctx.log(f"  note: other processes used {busy[name]:.2f} cores during {name}; "
                    f"its figures may be noisy")
    elapsed = time.perf_counter() - t_start
    parts = [(mon.others(a, b), b[2] - a[2]) for a, b in spans]
    overall = (sum(u * d for u, d in parts) / max(sum(d for _, d in parts), 1e-9)
               if parts and all(u is not None for u, _ in parts) else None)
    if overall is not None:
        worst = max((k for k in busy if busy[k] is not None), key=lambda k: busy[k],
                    default=None)
        info.append(f"other processes' CPU use while workloads ran: {overall:.2f} cores on "
                    "average"
                    + (f" (most during {worst}: {busy[worst]:.2f})" if worst else "")
                    + f"; load average {load_start} at the start, {machine.loadavg()} "
                    f"at the end" + (f"; waited {waited_total:.0f} s in all for quiet"
                                     if waited_total else ""))
        ctx.log(info[-1])

    fastest = max(speed.values(), default=0.0)
    if fastest:
        slowest = min(speed, key=speed.get)
        info.append(f"host speed (a fixed FMA loop timed before each workload, "
                    f"{machine.SpeedProbe.ITERATIONS:,} iterations): "
                    f"{speed[slowest]:.1f} to {fastest:.1f} GFLOP/s, the slowest before "
                    f"{slowest}")
        ctx.log(info[-1])
    for t in ctx.targets:       # a figure taken beside a busy neighbour says so
        wl = t.anchor[0] if t.anchor else t.name.split()[0].rstrip(":")
        used = busy.get(wl)
        if used is not None and used > 0.25 and "final loss" not in t.name:
            t.detail = (t.detail + "; " if t.detail else "") + \
                f"noisy: other processes used {used:.2f} cores meanwhile"
        if fastest and speed.get(wl) and speed[wl] < SLOW_HOST * fastest:
            t.detail = (t.detail + "; " if t.detail else "") + \
                (f"slow host: the FMA loop ran at {speed[wl] / fastest:.0%} of the run's "
                 f"best before {wl}")
    annotate(ctx.rows, ctx.targets)
    cells = table_cells(ctx.rows)
    table = text_table(HEAD, [c[:-1] + [c[-1] if len(c[-1]) <= 60 else c[-1][:57] + "..."]
                              for c in cells])
    targets = text_table(["target", "measured", "required", "met", "detail"],
                         target_cells(ctx.targets), groups=False)
    met = sum(1 for t in ctx.targets if t.met)
    missed = sum(1 for t in ctx.targets if t.met is False)
    print("\n" + table + "\n")
    print(targets + "\n")
    print(f"targets: {met} met, {missed} missed; checks: "
          f"{'all agree' if not ctx.failures else f'{len(ctx.failures)} FAILED'}; "
          f"suite took {elapsed:.0f} s" + (" (--quick)" if args.quick else ""))
    for f in ctx.failures:
        print(f"FAIL: {f}")

    output = args.output
    if output is None and not args.quick and not args.only:
        output = DEFAULT_OUTPUT
    if output:
        write_markdown(output, ctx, info, args, elapsed)
        print(f"wrote {os.path.relpath(output)}")
    return 1 if ctx.failures else 0


def write_markdown(path, ctx, info, args, elapsed) -> None:
    """This run as its CPU's section of the results file at `path` (the other CPUs'
    sections stay)."""
    cmd = "python -m benchmarks.run " + " ".join(sys.argv[1:])
    lines = [
        f"Written by `{cmd.strip()}`. Times are medians; IQR is the interquartile range as "
        "a share of the median; `lossc/peer` is lossc's time over the peer's (below 1: "
        "lossc is faster) and `lossc speedup` the peer's time over lossc's. Every peer's "
        "value and gradient was checked against lossc's before timing (`ok` and the "
        "largest relative error; float64 at rtol 1e-8).",
        "",
        "### Machine",
        "",
    ] + [f"- {x}" for x in info] + [
        f"- suite wall time: {elapsed:.0f} s" + (" (quick run: reduced sizes)" if args.quick
                                                 else ""),
        "",
        "### Targets",
        "",
        md_table(["target", "measured", "required", "met", "detail"],
                 target_cells(ctx.targets)),
        "",
        "### All figures",
        "",
        md_table(HEAD, table_cells(ctx.rows)),
        "",
    ]
    if ctx.failures:
        lines += ["### Check failures", ""] + [f"- {f}" for f in ctx.failures] + [""]
    lines += [
        "### Notes",
        "",
        "- Single-thread figures: every library on one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1, "
        "torch.set_num_threads(1), XLA without its multi-threaded Eigen pool) and the "
        "process pinned to one core, so no library's helper threads (JAX dispatches to "
        "its own) cross to the other core. The "
        f"{ctx.threads}-thread rows use lossc's own threads, numpy's BLAS raised with "
        "threadpoolctl, torch.set_num_threads, and JAX in a child process started with "
        f"{ctx.threads} XLA threads.",
        "- JAX calls are timed to `block_until_ready`; PyTorch calls build the graph and "
        "take `torch.autograd.grad` each time; numpy is the gradient derived by hand.",
        "- The run watches the machine: before each workload it waits (up to --max-wait s, "
        "--max-wait-total s in all) "
        "until other processes leave the CPUs alone, and reports how much CPU they used "
        "meanwhile (see Machine).",
        "- W5: all implementations follow the same per-epoch permutations "
        "(`np.random.default_rng(0).permutation(N)` per epoch, as `lossc.train` draws "
        "them). `lossc.train` runs with monitor=\"batches\" (the epoch loss from its "
        "batches, no extra pass, as the peers do); the row with the default "
        "monitor=\"full\" adds a full-data loss after every epoch.",
        "- GB/s: bytes of X streamed per call (B*D*itemsize) over the median time; the "
        "bandwidth rows are a one-pass numpy sum over a large array at the start of the "
        "run. The streaming cases (W2 B=1e6, stream) also time a numpy sum of their own "
        "batch in turn with the implementations (`numpy sum of X`), and their bandwidth "
        "targets are judged against it: on a busy machine the read bandwidth of minutes "
        "before is not that of the moment.",
    ] + [f"- {note}" for note in ctx.notes]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    results_file.write(path, results_file.Section.new(machine.this_cpu(), date, lines))


if __name__ == "__main__":
    sys.exit(main())
