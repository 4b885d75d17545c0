"""Helpers shared by the workloads: compiling quietly, lossc's multi-thread path, and
turning peers' outputs into numpy."""
from __future__ import annotations

import inspect
import threading
import warnings

import numpy as np

import lossc
from benchmarks.harness import Row, Stat, compare, fmt_err, fmt_time, measure


def compile_model(src: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lossc.compile(src, **kw)


def as_np(x) -> np.ndarray:
    if hasattr(x, "detach"):            # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def lossc_result(out):
    v, g = out
    return float(v), {k: np.asarray(a) for k, a in g.items()}


def flat_result(m):
    def result(out):
        v, g = out
        return float(v), {k: np.array(a) for k, a in m.unpack_params(g).items()}
    return result


def small_batch_impls(m, theta: dict, X, y, numpy_vg) -> list:
    """The three implementations every small-batch case times: lossc through the public
    API, lossc's low-level path on a bound batch, and NumPy written by hand."""
    from benchmarks.harness import Impl
    flat = m.pack_params(theta)
    gout = np.empty_like(flat)
    bound = m.bind({"x": X, "y": y})
    return [
        Impl("lossc value_and_grad", lambda: m.value_and_grad(theta, x=X, y=y), lossc_result),
        Impl("lossc flat (low level)",
             lambda: m.value_and_grad_flat(flat, bound, grad_out=gout), flat_result(m),
             note="bound batch, preallocated"),
        Impl("numpy (by hand)", lambda: numpy_vg(theta, X, y), lambda o: o),
    ]


def thread_mode(m) -> str:
    """How lossc is asked for several threads: a `threads=` keyword of value_and_grad,
    or Model.set_threads; "" when it cannot be."""
    try:
        if "threads" in inspect.signature(m.value_and_grad).parameters:
            return "kwarg"
    except (TypeError, ValueError):
        pass
    if callable(getattr(m, "set_threads", None)):
        return "set_threads"
    return ""


def threaded_call(m, theta: dict, kwargs: dict, n: int):
    """A zero-argument callable running value_and_grad on n threads, or None."""
    mode = thread_mode(m)
    if mode == "kwarg":
        def call():
            return m.value_and_grad(theta, threads=n, **kwargs)
        try:
            call()
        except (TypeError, ValueError):
            return None
        return call
    if mode == "set_threads":
        def call():
            m.set_threads(n)
            try:
                return m.value_and_grad(theta, **kwargs)
            finally:
                m.set_threads(1)
        return call
    return None


def thread_mode_text(m) -> str:
    mode = thread_mode(m)
    return {"kwarg": "value_and_grad(threads=n)", "set_threads": "Model.set_threads(n)"}.get(
        mode, "n/a (not supported)")


def torch_threads(torch, n: int):
    """A context manager setting torch's intra-op threads for a while."""
    class _T:
        def __enter__(self):
            self.old = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *a):
            torch.set_num_threads(self.old)
    return _T()


def blas_threads_available() -> bool:
    try:
        import threadpoolctl  # noqa: F401
        return True
    except ImportError:
        return False


def blas_threads(n: int):
    """numpy's BLAS limited (or raised) to n threads while inside; None without
    threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl.threadpool_limits(limits=n, user_api="blas")


class Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def thread_impls(m, call, theta: dict, X, y, n: int, numpy_vg, torch, torch_impl,
                 gbytes=None) -> list:
    """The n-thread rows of a large-batch workload: lossc's threaded `call`, numpy with
    its BLAS on n threads and, if installed, PyTorch on n intra-op threads."""
    from benchmarks.harness import Impl
    impls = [Impl(f"lossc {n} threads", call, lossc_result, gbytes=gbytes,
                  note=thread_mode_text(m)),
             Impl(f"numpy (by hand), BLAS {n} threads", lambda: numpy_vg(theta, X, y),
                  lambda o: o, gbytes=gbytes, context=lambda: blas_threads(n) or Null(),
                  note="" if blas_threads_available() else "threadpoolctl not installed: "
                  "BLAS threads unchanged")]
    if torch is not None:
        impls.append(torch_impl(torch, theta, X, y, name=f"torch eager {n} threads"))
        impls[-1].context = lambda: torch_threads(torch, n)
    return impls


def softmax_cross_entropy(Z: np.ndarray, y: np.ndarray):
    """By hand, for logits Z (B, K) and labels y: the objective mean(logsumexp(Z) - Z[y])
    and its gradient with respect to Z, (softmax(Z) - onehot(y)) / B."""
    B = Z.shape[0]
    zmax = Z.max(axis=1, keepdims=True)
    E = np.exp(Z - zmax)
    s = E.sum(axis=1)
    rows = np.arange(B)
    value = float(np.mean(np.log(s) + zmax[:, 0] - Z[rows, y]))
    P = E / s[:, None]
    P[rows, y] -= 1.0
    P /= B
    return value, P


def read_bandwidth_impl(X: np.ndarray, threads: int = 1):
    """A one-pass NumPy sum over the batch X itself (larger than the caches), timed in
    turn with the workload's implementations: the read bandwidth at the same moment and
    over the same bytes, which on a busy machine the suite's first bandwidth probe,
    taken minutes before, is not. Its row is a machine limit: timed, not checked."""
    from benchmarks.harness import Impl
    flat = X.reshape(-1)
    if threads == 1:
        call = flat.sum
    else:
        parts = np.array_split(flat, threads)

        def call():
            # (threads made for each call, so none is left behind; numpy lets go of
            # the GIL in the reduction)
            sums = [0.0] * threads
            workers = [threading.Thread(target=lambda k=k: sums.__setitem__(
                k, float(parts[k].sum()))) for k in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return sum(sums)
    name = "numpy sum of X (read bandwidth" + (f", {threads} threads)" if threads > 1
                                               else ")")
    return Impl(name, call, lambda o: (0.0, {}), gbytes=X.nbytes / 1e9, checked=False,
                note="one pass over the same batch, timed in turn with the others")


def bandwidth_target(ctx, name: str, workload: str, case: str, rows: dict, lossc_impl: str,
                     threads: int, share: float) -> None:
    """The target "lossc streams at >= share of the read bandwidth" for a case: against
    the case's own numpy sum of the batch (read_bandwidth_impl), timed in turn with
    lossc, or else the suite's first bandwidth probe."""
    required = f">= {100 * share:.0f}%"
    ours = rows.get(lossc_impl)
    probe = next((r for n, r in rows.items() if n.startswith("numpy sum of X")), None)
    if probe is not None and probe.gbps:
        bw, source = probe.gbps, "bandwidth: a numpy sum of the same batch, timed in turn"
    else:
        bw, source = ctx.bandwidth.get(threads), "bandwidth: the suite's first probe"
    if ours is None or not ours.gbps or not bw:
        ctx.target(name, "n/a", required, None, "lossc or the bandwidth not measured")
        return
    ctx.target(name, f"{100 * ours.gbps / bw:.0f}% ({ours.gbps:.1f} of {bw:.1f} GB/s)",
               required, ours.gbps >= share * bw,
               f"lossc {fmt_time(ours.time)} a call; {source}",
               anchor=(workload, case, lossc_impl))


def peer_impls(jax, jax_impl, torch, torch_impl, *args) -> list:
    """The JAX and PyTorch implementations of a case, of those peers that loaded."""
    impls = []
    if jax is not None:
        impls.append(jax_impl(jax, *args))
    if torch is not None:
        impls.append(torch_impl(torch, *args))
    return impls


def na_peers(ctx, workload, case):
    if ctx.jax is None:
        ctx.na(workload, case, "jax jit", ctx.jax_why)
    if ctx.torch is None:
        ctx.na(workload, case, "torch eager", ctx.torch_why)


def child_row(ctx, workload: str, case: str, gb: float) -> None:
    """JAX at n threads, measured in a child process (XLA's thread count is fixed when
    it starts)."""
    name = f"jax jit {ctx.threads} threads"
    if ctx.jax is None:
        ctx.na(workload, case, name, ctx.jax_why)
        return
    res = ctx.run_child(workload)
    if res is None or "error" in res:
        ctx.na(workload, case, name, (res or {}).get("error", "child process failed"))
        return
    ok = res["err"] <= 1e-8
    row = Row(workload, case, name,
              stat=Stat(res["seconds"], res["q1"], res["q3"], 1, res["samples"]),
              gbytes=gb, check=("ok " if ok else "FAIL ") + fmt_err(res["err"]),
              note="separate process")
    if not ok:
        ctx.fail(f"{workload} {case}: {name} disagrees with numpy at {res['where']}: "
                 f"{res['err']:.2e}")
    ctx.rows.append(row)
    ctx.log(f"  {name:<28} {fmt_time(row.time):>10} {row.stat.spread:>5}  {row.check}"
            f"  (separate process)")


def child_case(ctx, im, ref, workload) -> dict:
    v, g = im.result(im.call())
    err, where = compare(v, g, *ref)
    st = measure({"j": im.call}, samples=ctx.samples(7, 3), sample_s=0.0)["j"]
    return {"workload": workload, "seconds": st.median, "err": err, "where": where,
            "q1": st.q1, "q3": st.q3, "samples": st.samples}
