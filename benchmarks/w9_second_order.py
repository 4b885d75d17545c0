"""W9: full-batch second order. W2's model (with its 1e-3 * sum(w ^ 2) term) on
N = 100,000 samples, D = 32, minimized to a gradient norm of 1e-8.

The baseline is what exists: scipy.optimize.minimize(method="L-BFGS-B", jac=True) on
lossc's own objective (`model.scipy_objective`), its wall time and iterations, beside the
same on NumPy's objective written by hand (a check: both must reach the same optimum).
The rows for lossc's own second-order methods fill in when lossc has them, detected by
feature, with these calls:

- `lossc.LBFGS` (and `lossc.NewtonCG`): an optimizer for the training driver,
  `lossc.train(model, data, optimizer=lossc.LBFGS(), batch_size=None, tol_grad=1e-8,
  steps=MAX_ITER)`;
- `model.hvp(theta, v, **inputs)`: the Hessian of the objective times v (theta and v
  dicts shaped like `model.init_params()`), returned as such a dict or as a flat vector.
  It is checked against the product derived by hand, timed against `value_and_grad` on
  the same batch (the cost per sample of one against the other), and drives SciPy's
  Newton-CG (`hessp`).

Until then each says "not available in this lossc". Their targets: lossc.LBFGS in at
most half the wall time of L-BFGS-B on lossc's objective, both own optimizers at the
optimum L-BFGS-B reaches (the objective within 1e-10, relative), and a Hessian-vector
product costing at most 4x a gradient per sample.
"""
from __future__ import annotations

import math
import time

import numpy as np

import lossc
from benchmarks.common import compile_model
from benchmarks.harness import Row, Stat, fmt_err, fmt_ratio, fmt_time, measure, rel_err
from benchmarks.w2_logistic import LAM, SRC, D, make_data, numpy_vg

N = 100_000
GRAD_NORM = 1e-8
MAX_ITER = 10_000
RUNS = 3                    # timed runs of each minimization, in turns
LBFGS_TIME_SHARE = 0.5      # lossc.LBFGS's time over L-BFGS-B's on lossc's objective
OPTIMUM_RTOL = 1e-10        # the objective at a method's end against L-BFGS-B's
HVP_PER_GRADIENT = 4.0      # the most an HVP may cost per sample, in gradients
NOT_AVAILABLE = "not available in this lossc"
NOTE = ("W9: minimizations start from the model's initial parameters (zeros) and stop at "
        "a gradient 2-norm of 1e-8: L-BFGS-B with gtol = 1e-8 / sqrt(n) (it tests the "
        "largest component) and ftol = 0; the final norm is recomputed by lossc. lossc's "
        "own L-BFGS and Newton-CG (lossc.LBFGS, lossc.NewtonCG) and its Hessian-vector "
        "product (model.hvp) are used when lossc has them; their rows say otherwise.")


def flat_numpy_objective(X, y):
    """NumPy's objective by hand, flat parameters (w then b) as SciPy takes them."""
    def fun(theta):
        v, g = numpy_vg({"w": theta[:D], "b": np.array(theta[D])}, X, y)
        return v, np.concatenate([g["w"], [float(g["b"])]])
    return fun


def numpy_hvp(theta: dict, v: dict, X, y) -> dict:
    """By hand: with s = sigmoid(z), z = Xw + b, and u = X v_w + v_b, the Hessian times v
    is (X^T (s(1 - s) u) / N + 2 lam v_w, sum(s(1 - s) u) / N)."""
    z = X @ theta["w"] + float(theta["b"])
    s = 1.0 / (1.0 + np.exp(-z))
    c = s * (1.0 - s) * (X @ v["w"] + float(v["b"])) / X.shape[0]
    return {"w": X.T @ c + 2 * LAM * v["w"], "b": np.array(c.sum())}


def lbfgs_b(fun, x0):
    import scipy.optimize
    n = x0.size
    return scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options={
        "gtol": GRAD_NORM / math.sqrt(n), "ftol": 0.0, "maxiter": MAX_ITER,
        "maxfun": 2 * MAX_ITER})


def grad_norm(m, flat, X, y) -> float:
    _, g = m.value_and_grad_flat(np.asarray(flat, dtype=m.dtype), m.bind({"x": X, "y": y}))
    return float(np.linalg.norm(g))


def run(ctx, n: int = N) -> None:
    ctx.notes.append(NOTE)
    X, y = make_data(n, seed=31)
    m = compile_model(SRC, dims={"D": D})
    case = f"N={n:,}, to |grad| <= {GRAD_NORM:g}"
    ctx.log(f"W9 {case}")
    ref = scipy_rows(ctx, m, X, y, case)
    lossc_optimizer_row(ctx, m, X, y, case, "LBFGS", ref)
    lossc_optimizer_row(ctx, m, X, y, case, "NewtonCG", ref)
    hvp_rows(ctx, m, X, y, case, ref)


def scipy_rows(ctx, m, X, y, case):
    """SciPy's L-BFGS-B on lossc's objective and on NumPy's, in turns; returns lossc's
    result (the reference optimum) or None."""
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        ctx.na("W9", case, "scipy L-BFGS-B on lossc's objective", "SciPy not installed")
        ctx.target("W9 scipy L-BFGS-B on lossc's objective", "n/a", "(figure)", None,
                   "SciPy not installed")
        return None
    fun, x0 = m.scipy_objective(x=X, y=y)
    fun_np = flat_numpy_objective(X, y)
    results, times = {}, {"lossc": [], "numpy": []}
    for _ in range(ctx.samples(RUNS, 1)):
        for name, f in (("lossc", fun), ("numpy", fun_np)):
            t0 = time.perf_counter_ns()
            results[name] = lbfgs_b(f, x0.copy())
            times[name].append((time.perf_counter_ns() - t0) * 1e-9)
    res, res_np = results["lossc"], results["numpy"]
    gn = grad_norm(m, res.x, X, y)
    _, g_np = fun_np(res.x)
    check = optimum_check(ctx, case, res, res_np, float(np.linalg.norm(g_np)))
    for name, label, r in (("lossc", "scipy L-BFGS-B on lossc's objective", res),
                           ("numpy", "scipy L-BFGS-B on numpy's objective (by hand)",
                            res_np)):
        st = Stat(float(np.median(times[name])), float(np.percentile(times[name], 25)),
                  float(np.percentile(times[name], 75)), 1, len(times[name]))
        ctx.rows.append(Row("W9", case, label, stat=st, ref=(name == "lossc"),
                            check="ref" if name == "lossc" else check,
                            note=f"{r.nit} iterations, {r.nfev} evaluations; "
                            f"{fmt_time(st.median / max(r.nfev, 1))} an evaluation"))
        ctx.log(f"  {label:<46} {fmt_time(st.median):>10} {st.spread:>5}  {r.nit} "
                f"iterations, {r.nfev} evaluations")
    ctx.target("W9 scipy L-BFGS-B on lossc's objective", f"{fmt_time(float(np.median(times['lossc'])))}"
               f", {res.nit} iterations", "(figure)", None,
               f"final |grad| {gn:.1e} ({'reached' if gn <= GRAD_NORM else 'NOT reached'}); "
               f"{res.nfev} evaluations; scipy: {res.message}",
               anchor=("W9", case, "scipy L-BFGS-B on lossc's objective"))
    if gn > GRAD_NORM:
        ctx.fail(f"W9 L-BFGS-B on lossc's objective stopped at |grad| {gn:.2e} > "
                 f"{GRAD_NORM:g}: {res.message}")
    return res


def optimum_check(ctx, case, res, res_np, g_np_norm: float) -> str:
    """lossc's optimum against NumPy's: the same objective value, nearby parameters, and
    NumPy's own gradient small there too."""
    v_err = abs(res.fun - res_np.fun) / abs(res_np.fun)
    x_err = rel_err(res.x, res_np.x)
    ok = v_err <= 1e-12 and x_err <= 1e-6 and g_np_norm <= 10 * GRAD_NORM
    if not ok:
        ctx.fail(f"W9 {case}: the optimum on lossc's objective differs from NumPy's: "
                 f"value {v_err:.1e}, parameters {x_err:.1e}, NumPy's |grad| there "
                 f"{g_np_norm:.1e}")
    return f"{'ok' if ok else 'FAIL'} {fmt_err(max(v_err, x_err))}"


def lossc_optimizer_row(ctx, m, X, y, case, name: str, ref) -> None:
    """lossc's own full-batch optimizer `lossc.<name>`, when lossc has one: its time and
    iterations, and whether it ends at L-BFGS-B's optimum (and, for LBFGS, in at most
    half of L-BFGS-B's time)."""
    label = f"lossc.{name} (lossc.train, full batch)"
    optimum = f"W9 lossc.{name} reaches L-BFGS-B's optimum"
    speed = "W9 lossc.LBFGS time / L-BFGS-B's on lossc's objective"
    opt_class = getattr(lossc, name, None)
    if opt_class is None:
        ctx.na("W9", case, label, NOT_AVAILABLE)
        ctx.target(optimum, NOT_AVAILABLE, f"<= {OPTIMUM_RTOL:g} relative", None)
        if name == "LBFGS":
            ctx.target(speed, NOT_AVAILABLE, f"<= {LBFGS_TIME_SHARE:g}x", None)
        return
    times = []
    try:
        for _ in range(ctx.samples(RUNS, 1)):
            t0 = time.perf_counter_ns()
            res = lossc.train(m, data={"x": X, "y": y}, optimizer=opt_class(),
                              batch_size=None, tol_grad=GRAD_NORM, steps=MAX_ITER,
                              monitor="batches")
            times.append((time.perf_counter_ns() - t0) * 1e-9)
        flat = m.pack_params(res.params)
    except Exception as e:      # a new method's failure is a finding, not the end
        error_row(ctx, case, label, optimum, e)
        return
    seconds = float(np.median(times))
    gn = grad_norm(m, flat, X, y)
    check = same_optimum(ctx, label, flat, ref)
    ctx.rows.append(Row("W9", case, label, seconds=seconds, check=check,
                        note=f"{res.steps} iterations; final |grad| {gn:.1e}; "
                        f"{res.stopped_reason}"))
    ctx.log(f"  {label:<46} {fmt_time(seconds):>10}  {res.steps} iterations, "
            f"|grad| {gn:.1e}")
    if ref is None:
        ctx.target(optimum, "n/a", f"<= {OPTIMUM_RTOL:g} relative", None, "no SciPy")
        return
    value, _ = m.value_and_grad_flat(np.asarray(flat, dtype=m.dtype), m.bind({"x": X, "y": y}))
    v_err = abs(float(value) - ref.fun) / abs(ref.fun)
    ctx.target(optimum, f"{v_err:.1e} relative", f"<= {OPTIMUM_RTOL:g} relative",
               v_err <= OPTIMUM_RTOL, f"objective {float(value)!r} vs {ref.fun!r}; final "
               f"|grad| {gn:.1e}; {res.steps} iterations", anchor=("W9", case, label))
    if name != "LBFGS":
        return
    ref_time = next((r.time for r in ctx.rows if r.workload == "W9" and r.case == case
                     and r.impl == "scipy L-BFGS-B on lossc's objective"), None)
    if ref_time:
        ctx.target(speed, f"{fmt_ratio(seconds / ref_time)}x", f"<= {LBFGS_TIME_SHARE:g}x",
                   seconds <= LBFGS_TIME_SHARE * ref_time,
                   f"lossc.LBFGS {fmt_time(seconds)} ({res.steps} iterations), L-BFGS-B "
                   f"{fmt_time(ref_time)} ({ref.nit} iterations)", anchor=("W9", case, label))


def hvp_rows(ctx, m, X, y, case, ref) -> None:
    """model.hvp, when lossc has it: checked by hand, its cost per sample against the
    gradient's, and SciPy's Newton-CG driven by it."""
    hvp_case = f"N={X.shape[0]:,}, one call"
    label = "lossc model.hvp"
    target = "W9 HVP cost / gradient cost per sample"
    hvp = getattr(m, "hvp", None)
    if hvp is None:
        ctx.na("W9", hvp_case, label, NOT_AVAILABLE)
        ctx.na("W9", case, "scipy Newton-CG with model.hvp", NOT_AVAILABLE)
        ctx.target(target, NOT_AVAILABLE, f"<= {HVP_PER_GRADIENT:g}x", None)
        ctx.target("W9 scipy Newton-CG with lossc's HVP", NOT_AVAILABLE, "(figure)", None)
        return
    rng = np.random.default_rng(32)
    theta = {"w": rng.normal(0, 0.3, D), "b": np.array(0.1)}
    v = {"w": rng.standard_normal(D), "b": np.array(0.5)}

    def call():
        return hvp(theta, v, x=X, y=y)
    try:
        got = as_param_dict(m, call())
    except Exception as e:
        error_row(ctx, hvp_case, label, target, e)
        return
    want = numpy_hvp(theta, v, X, y)
    err = max(rel_err(got[k], want[k]) for k in want)
    if err > 1e-8:
        ctx.fail(f"W9 model.hvp differs from the product by hand: {err:.2e}")
    stats = measure({"hvp": call, "vg": lambda: m.value_and_grad(theta, x=X, y=y)},
                    samples=ctx.samples(9, 3), sample_s=0.0)
    n = X.shape[0]
    ctx.rows.append(Row("W9", hvp_case, "lossc value_and_grad", stat=stats["vg"], ref=True,
                        note=f"{fmt_time(stats['vg'].median / n)} a sample"))
    ctx.rows.append(Row("W9", hvp_case, label, stat=stats["hvp"],
                        check=f"{'ok' if err <= 1e-8 else 'FAIL'} {fmt_err(err)}",
                        note=f"{fmt_time(stats['hvp'].median / n)} a sample; checked "
                        "against the product by hand"))
    ratio = stats["hvp"].median / stats["vg"].median
    ctx.log(f"  model.hvp {fmt_time(stats['hvp'].median)}, value_and_grad "
            f"{fmt_time(stats['vg'].median)}: {fmt_ratio(ratio)}x")
    ctx.target(target, f"{fmt_ratio(ratio)}x", f"<= {HVP_PER_GRADIENT:g}x",
               ratio <= HVP_PER_GRADIENT,
               f"hvp {fmt_time(stats['hvp'].median / n)}, gradient "
               f"{fmt_time(stats['vg'].median / n)} a sample",
               anchor=("W9", hvp_case, label))
    newton_cg_row(ctx, m, X, y, case, ref, hvp)


def newton_cg_row(ctx, m, X, y, case, ref, hvp) -> None:
    import scipy.optimize
    label = "scipy Newton-CG with model.hvp"
    fun, x0 = m.scipy_objective(x=X, y=y)

    def hessp(theta, p):
        out = hvp(m.unpack_params(theta), m.unpack_params(p), x=X, y=y)
        return m.pack_params(as_param_dict(m, out)).astype(np.float64)
    t0 = time.perf_counter_ns()
    res = scipy.optimize.minimize(fun, x0, jac=True, hessp=hessp, method="Newton-CG",
                                  options={"xtol": 1e-14, "maxiter": 200})
    seconds = (time.perf_counter_ns() - t0) * 1e-9
    gn = grad_norm(m, res.x, X, y)
    check = same_optimum(ctx, label, res.x, ref)
    ctx.rows.append(Row("W9", case, label, seconds=seconds, check=check,
                        note=f"{res.nit} iterations, {res.nhev} Hessian products; final "
                        f"|grad| {gn:.1e}"))
    ctx.log(f"  {label:<46} {fmt_time(seconds):>10}  {res.nit} iterations, |grad| {gn:.1e}")
    ctx.target("W9 scipy Newton-CG with lossc's HVP", f"{fmt_time(seconds)}, {res.nit} "
               "iterations", "(figure)", None, f"final |grad| {gn:.1e}",
               anchor=("W9", case, label))


def error_row(ctx, case: str, label: str, target: str, e: Exception) -> None:
    """A method lossc has that raised: a failed check, its row and its target say so."""
    what = f"{type(e).__name__}: {e}"
    ctx.fail(f"W9 {label} raised {what}")
    ctx.rows.append(Row("W9", case, label, check="ERROR", note=what[:120]))
    ctx.target(target, "ERROR", "a working method", False, what[:100])


def same_optimum(ctx, label: str, flat, ref) -> str:
    """The check of a method's end point against L-BFGS-B's optimum (ref: its result)."""
    if ref is None:
        return ""
    err = rel_err(flat, ref.x)
    if err > 1e-6:
        ctx.fail(f"W9 {label} ends {err:.1e} from L-BFGS-B's optimum")
    return f"{'ok' if err <= 1e-6 else 'FAIL'} {fmt_err(err)}"


def as_param_dict(m, out) -> dict:
    """hvp's result as a dict of arrays shaped like the parameters (it may give a flat
    vector)."""
    if isinstance(out, dict):
        return {k: np.asarray(a, dtype=np.float64) for k, a in out.items()}
    return {k: np.asarray(a, dtype=np.float64)
            for k, a in m.unpack_params(np.asarray(out, dtype=m.dtype)).items()}
