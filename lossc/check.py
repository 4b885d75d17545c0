"""Gradient checking: the compiled gradient against central finite differences."""
from __future__ import annotations

from typing import Optional

import numpy as np

from lossc.runtime.calls import IndexOutOfRange

MAX_COMPONENTS = 4000  # beyond this many parameters, check a random subset
PER_PARAM_MIN = 50
REDRAWS = 200     # draws of a sample's int inputs before random_batch gives up on it


def random_batch(model, batch: int, seed: int, flat=None) -> dict:
    """A batch of standard-normal real inputs and in-range int inputs: each int input
    below the smallest size it indexes. Where index arithmetic takes such a draw out of
    range (P[i + 1], P[i - 4]), and the flat parameters `flat` are given, the samples
    that fail are drawn again below the largest size, up to REDRAWS times each; a
    sample that fails them all (no value fits: P[i - 10] of P[5]) ends the redrawing,
    and the check's first call reports the index out of range."""
    rng = np.random.default_rng(seed + 1)
    data = {}
    limits = [c["size"] for c in model.meta.get("index_checks", [])]
    top = min(limits) if limits else 2
    ints = [spec for spec in model.inputs if spec.is_int]
    for spec in model.inputs:
        if spec.is_int:
            data[spec.name] = rng.integers(0, top, size=(batch,) + spec.shape)
        else:
            data[spec.name] = rng.normal(size=(batch,) + spec.shape)
    if flat is None or not ints or _indexes_in_range(model, flat, data):
        return data
    for k in range(batch):
        sample = {name: v[k:k + 1] for name, v in data.items()}
        for _ in range(REDRAWS):
            if _indexes_in_range(model, flat, sample):
                break
            for spec in ints:
                sample[spec.name][...] = rng.integers(0, max(limits), size=(1,) + spec.shape)
        else:
            break
    return data


def _indexes_in_range(model, flat, data: dict) -> bool:
    try:
        model.loss_flat(flat, model.bind(data))
    except IndexOutOfRange:
        return False
    return True


# the defaults of eps and rtol by dtype: central differences of step h err by about
# h^2 f''' (truncation) plus eps_dtype |f| / h (rounding); float32's h balances them
# near its cube root of eps
DEFAULT_EPS = {"float64": 1e-6, "float32": 1e-3}
DEFAULT_RTOL = {"float64": 1e-5, "float32": 1e-3}
ROUNDING_ULPS = 8       # of |f|, for the rounding of each objective value


def gradient_check(model, seed: int = 0, batch: int = 8, eps: Optional[float] = None,
                   rtol: Optional[float] = None, theta=None, data=None,
                   hypers=None) -> dict:
    """Per parameter: the compiled gradient, the central difference, their errors; at
    `theta` (default: the file's initial values drawn from `seed`) on `data` (default:
    `batch` random samples) with `hypers` (default: the file's).

    Each step is taken in the model's dtype (x + h and x - h rounded as the model
    holds them; the difference divides by the step actually taken). An element passes
    within rtol max(1, |numeric|) plus what rounding the objective allows, ROUNDING_ULPS
    ulps of |f| per value (times sqrt(B) for a sum over B samples) over the step: a
    large objective resolves its gradient less finely, and an element whose step is
    too small for the rounding to tell any gradient of its size fails as unresolved.
    Where every element is within its tolerance of 0 (at a minimum, where a negated or
    zero gradient would pass too) the report is inconclusive, not ok. Where the
    one-sided differences disagree beyond the tolerance, they are taken again at a
    quarter of the step: a smooth function's differ by about h f'', so they come
    closer by about four, and the element is judged by the central differences at h
    and h/4 extrapolated; a kink between h/4 and h away leaves the smaller step's
    sides agreeing, and its central difference judges; at a kink at the point (relu,
    abs, max at a tie) they stay apart, the central difference is their mean, and the
    compiled gradient passes if it lies between them, within the same tolerance (a
    subgradient: lossc's convention takes a side of each kink, and kinks that add up at
    one point, relu(b) + abs(b) at 0, give a sum of sides between the two); the report
    says so."""
    dtype = np.dtype(model.dtype)
    eps = DEFAULT_EPS[dtype.name] if eps is None else eps
    rtol = DEFAULT_RTOL[dtype.name] if rtol is None else rtol
    theta = model.init_params(seed) if theta is None else theta
    flat = model.pack_params(theta).astype(np.float64)
    if data is None:
        data = random_batch(model, batch, seed, flat) if model.inputs else {}
    bound = model.bind(data, hypers)
    value, grad = model.value_and_grad_flat(flat, bound)
    rng = np.random.default_rng(seed)
    idx = np.arange(flat.size)
    if flat.size > MAX_COMPONENTS:
        # every parameter gets checked: small ones whole, large ones on a random sample
        # in proportion to their size (at least PER_PARAM_MIN elements)
        picks = []
        for p in model.params:
            k = min(p.size, max(PER_PARAM_MIN, MAX_COMPONENTS * p.size // flat.size))
            picks.append(p.offset + rng.choice(p.size, k, replace=False))
        idx = np.sort(np.concatenate(picks))
    ulp = float(np.finfo(dtype).eps) * ROUNDING_ULPS * np.sqrt(max(1, bound.B or 1))

    def differences(j: int, h: float):
        """(central, (right side, left side), rounding noise, whether the objective is
        finite at both steps) of element j at step h."""
        x = flat[j]
        up, down = flat.copy(), flat.copy()
        up[j], down[j] = float(dtype.type(x + h)), float(dtype.type(x - h))
        f_up, f_down = model.loss_flat(up, bound), model.loss_flat(down, bound)
        # (a step that rounds to 0 gives NaN and an infinite noise: unresolved below)
        with np.errstate(divide="ignore", invalid="ignore"):
            central = (f_up - f_down) / (up[j] - down[j])
            sides = (f_up - value) / (up[j] - x), (value - f_down) / (x - down[j])
            noise = (ulp * max(abs(f_up), abs(f_down), abs(value))
                     / np.float64(min(up[j] - x, x - down[j])))
        return central, sides, noise, bool(np.isfinite(f_up) and np.isfinite(f_down))

    numeric = np.full(flat.size, np.nan)
    noises = np.full(flat.size, np.nan)
    sides = np.full((flat.size, 2), np.nan)
    steps = np.full(flat.size, np.nan)
    finite = np.ones(flat.size, dtype=bool)
    for j in idx:
        steps[j] = eps * max(1.0, abs(flat[j]))
        numeric[j], sides[j], noises[j], finite[j] = differences(j, steps[j])
    rows, ok, informative = [], True, False
    for p in model.params:
        sl = [j for j in idx if p.offset <= j < p.offset + p.size]
        a = np.asarray(grad[sl], dtype=np.float64)
        t = rtol * np.fmax(1.0, np.abs(numeric[sl])) + noises[sl]
        gap = np.abs(sides[sl, 0] - sides[sl, 1])
        kink = gap > 2 * t
        for k in np.flatnonzero(kink):
            # one-sided differences of a smooth function differ by about h f'' (a
            # curvature, a quarter of it at a quarter of the step), those of a kink at
            # the point by a constant; at a quarter of the step a kink between h/4 and
            # h from the point is out of reach and the sides agree. Curvature: the
            # central differences at h and h/4 extrapolated (Richardson: their terms in
            # h^2 cancel, where sin(1e5 x) left the central difference off by 1e-4); a
            # kink nearby: the central difference at h/4, clear of it
            j = sl[k]
            central, quarter_sides, noise, quarter_finite = differences(j, steps[j] / 4)
            shrunk = abs(quarter_sides[0] - quarter_sides[1]) / gap[k]
            if not quarter_finite or not shrunk <= 0.5:
                continue
            kink[k] = False
            if shrunk >= 1 / 8:
                numeric[j] = (16 * central - numeric[j]) / 15
                noises[j] = (16 * noise + noises[j]) / 15
            else:
                numeric[j], noises[j] = central, noise
            sides[j] = quarter_sides
            t[k] = rtol * max(1.0, abs(numeric[j])) + noises[j]
        n = numeric[sl]
        err = np.abs(a - n)
        between = ((a >= np.min(sides[sl], axis=1) - t)
                   & (a <= np.max(sides[sl], axis=1) + t))
        at_kink = kink & between & (err > t)
        # a step so small that the objective's rounding allows any gradient of the
        # element's size judges nothing: such an element fails, and the report says why
        # (a step that rounds to 0 is one; an objective not finite a step away is told
        # apart)
        unresolved = (noises[sl] >= np.fmax(1.0, np.fmax(np.abs(a), np.abs(n)))) \
            & finite[sl]
        # (an element tells a gradient from its negation where 2 |n| exceeds its
        # tolerance; or it is exactly 0 both ways, as an unused parameter's is)
        informative |= bool(np.any((2 * np.abs(n) > t) | ((a == 0) & (n == 0))))
        good_each = ((err <= t) | at_kink) & ~unresolved
        good = bool(np.all(good_each))
        ok &= good
        abs_err = float(np.max(err)) if sl else 0.0
        scale = max(1.0, float(np.max(np.abs(n))) if sl else 1.0)
        rows.append({"name": p.name, "shape": p.shape, "analytic": a, "numeric": n,
                     "abs_err": abs_err, "rel_err": abs_err / scale, "ok": good,
                     "checked": len(sl), "kinks": int(np.sum(at_kink)),
                     "kinks_outside": int(np.sum(kink & ~between)),
                     "unresolved": int(np.sum(unresolved)),
                     "not_finite": int(np.sum(~finite[sl]))})
    # near a minimum every element's difference is within its tolerance (rtol of 1,
    # and the objective's rounding) of 0: a negated or zero gradient would pass as well;
    # such a check shows nothing, and says so (inconclusive, not passed)
    inconclusive = (ok and bool(idx.size) and not informative
                    and bool(np.isfinite(value)))
    largest = float(np.nanmax(np.abs(numeric[idx]), initial=0.0)) if idx.size else 0.0
    return {"value": value, "rows": rows,
            "ok": ok and bool(np.isfinite(value)) and not inconclusive,
            "inconclusive": inconclusive, "largest": largest}


def format_check(model, report: dict) -> str:
    lines = [f"objective = {report['value']:.10g}"]
    width = max([len(r["name"]) for r in report["rows"]] + [4])
    for r in report["rows"]:
        status = "ok" if r["ok"] else "MISMATCH"
        if r["shape"] == ():
            lines.append(f"  {r['name']:<{width}}  grad {r['analytic'][0]:<22.16g} "
                         f"finite diff {r['numeric'][0]:<22.16g} err {r['abs_err']:.2e}  {status}")
        else:
            lines.append(f"  {r['name']:<{width}}  {list(r['shape'])} ({r['checked']} checked) "
                         f"max err {r['abs_err']:.2e} (rel {r['rel_err']:.2e})  {status}")
    for r in report["rows"]:
        if r["kinks"]:
            lines.append(f"  {r['name']}: {r['kinks']} element(s) at a kink (the one-sided "
                         "differences disagree): the compiled gradient lies between them, "
                         "by lossc's conventions (relu'(0) = 0, abs'(0) = 0, max to its "
                         "first argument at a tie)")
        if r["unresolved"]:
            lines.append(f"  {r['name']}: {r['unresolved']} element(s) not resolved: at this "
                         "step the objective's rounding allows any gradient of their size; "
                         "take a larger --eps")
        if r["kinks_outside"]:
            lines.append(f"  {r['name']}: {r['kinks_outside']} element(s) at a kink where the "
                         "compiled gradient is outside the one-sided differences: max and "
                         "min give a tie's whole gradient to their first argument, and two "
                         "of them at one point can add up outside (docs/language.md); check "
                         "at parameters off the kink (--params) to judge the rules")
        if r["not_finite"] and np.isfinite(report["value"]):
            lines.append(f"  {r['name']}: {r['not_finite']} element(s) whose objective is "
                         "not finite a step away (the edge of a domain: log or sqrt "
                         "near 0, or an overflow): take a smaller --eps, or check at "
                         "parameters farther from the edge")
    if report.get("inconclusive"):
        lines.append(f"  inconclusive: every element's finite difference (the largest "
                     f"{report['largest']:.3g}) is within its tolerance of 0, so any "
                     "gradient that small would pass, a negated or a zero one too, as at a "
                     "minimum: check at other parameters (--seed, or the initial ones)")
    if not np.isfinite(report["value"]):
        lines.append(f"  the objective is {report['value']} at these parameters: there is "
                     "nothing to compare (check at other parameters: --seed, --params)")
    lines.append("gradient check passed" if report["ok"] else
                 "gradient check INCONCLUSIVE" if report.get("inconclusive") else
                 "gradient check FAILED")
    return "\n".join(lines)
