"""Gradient checking: the compiled gradient against central finite differences."""
from __future__ import annotations

import numpy as np

MAX_COMPONENTS = 4000  # beyond this many parameters, check a random subset
PER_PARAM_MIN = 50


def random_batch(model, batch: int, seed: int) -> dict:
    """A batch of standard-normal real inputs and in-range int inputs."""
    rng = np.random.default_rng(seed + 1)
    data = {}
    limits = [c["size"] for c in model.meta.get("index_checks", [])]
    top = min(limits) if limits else 2
    for spec in model.inputs:
        if spec.is_int:
            data[spec.name] = rng.integers(0, top, size=(batch,) + spec.shape)
        else:
            data[spec.name] = rng.normal(size=(batch,) + spec.shape)
    return data


def gradient_check(model, seed: int = 0, batch: int = 8, eps: float = 1e-6,
                   rtol: float = 1e-5, theta=None, data=None, hypers=None) -> dict:
    """Per parameter: the compiled gradient, the central difference, their errors; at
    `theta` (default: the file's initial values drawn from `seed`) on `data` (default:
    `batch` random samples) with `hypers` (default: the file's)."""
    theta = model.init_params(seed) if theta is None else theta
    if data is None:
        data = random_batch(model, batch, seed) if model.inputs else {}
    flat = model.pack_params(theta).astype(np.float64)
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
    numeric = np.full(flat.size, np.nan)
    for j in idx:
        h = eps * max(1.0, abs(flat[j]))
        up, down = flat.copy(), flat.copy()
        up[j] += h
        down[j] -= h
        numeric[j] = (model.loss_flat(up, bound) - model.loss_flat(down, bound)) / (2 * h)
    rows, ok = [], True
    for p in model.params:
        sl = [j for j in idx if p.offset <= j < p.offset + p.size]
        a, n = np.asarray(grad[sl], dtype=np.float64), numeric[sl]
        abs_err = float(np.max(np.abs(a - n))) if sl else 0.0
        scale = max(1.0, float(np.max(np.abs(n))) if sl else 1.0)
        good = abs_err <= rtol * scale
        ok &= good
        rows.append({"name": p.name, "shape": p.shape, "analytic": a, "numeric": n,
                     "abs_err": abs_err, "rel_err": abs_err / scale, "ok": good,
                     "checked": len(sl)})
    return {"value": value, "rows": rows, "ok": ok}


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
    lines.append("gradient check passed" if report["ok"] else "gradient check FAILED")
    return "\n".join(lines)
