"""W1: the seed example f(x1, x2) = log(x1) + x1*x2 - sin(x2) at (2, 5): per-call latency
of value and gradient, no batch."""
from __future__ import annotations

import math

import numpy as np

from benchmarks.common import compile_model, flat_result, lossc_result
from benchmarks.harness import Impl, fmt_ratio
from benchmarks.machine import EmptyCall

SRC = """\
param x1 = 2
param x2 = 5
loss = log(x1) + x1 * x2 - sin(x2)
"""


def numpy_vg(x1: float, x2: float):
    # by hand: d/dx1 = 1/x1 + x2, d/dx2 = x1 - cos(x2); scalars, so math beats numpy
    return (math.log(x1) + x1 * x2 - math.sin(x2),
            {"x1": 1.0 / x1 + x2, "x2": x1 - math.cos(x2)})


def run(ctx) -> None:
    m = compile_model(SRC)
    theta = m.init_params(0)
    v, g = m.value_and_grad(theta)
    if abs(v - (math.log(2) + 10 - math.sin(5))) > 1e-12 or abs(g["x1"] - 5.5) > 1e-12 \
            or abs(g["x2"] - (2 - math.cos(5))) > 1e-12:
        ctx.fail(f"W1 lossc gives {v}, {g}; expected 11.6520..., d/dx1 = 5.5, "
                 f"d/dx2 = 1.71633...")
    flat = m.pack_params(theta)
    gout = np.empty_like(flat)
    prepared = m.prepare(flat.copy(), grad_out=np.empty_like(flat))
    empty = EmptyCall()
    impls = [
        Impl("lossc value_and_grad", lambda: m.value_and_grad(theta), lossc_result,
             note="dict in, dict out"),
        Impl("lossc flat (low level)",
             lambda: m.value_and_grad_flat(flat, grad_out=gout), flat_result(m),
             note="preallocated flat buffers"),
        Impl("lossc prepared call", lambda: (prepared(), prepared.grad),
             lambda o: flat_result(m)(o), note="Model.prepare: one native call"),
        Impl("numpy (by hand)", lambda: numpy_vg(2.0, 5.0), lambda o: o,
             note="math on floats"),
        Impl("empty native call (machine limit)", empty, lambda o: (0.0, {}), checked=False,
             note="ctypes into a function that returns at once: no call path goes below"),
    ]
    jax, torch = ctx.jax, ctx.torch
    if jax is not None:
        jnp = jax.numpy

        def f(p):
            return jnp.log(p["x1"]) + p["x1"] * p["x2"] - jnp.sin(p["x2"])
        vg = jax.jit(jax.value_and_grad(f))
        p = {"x1": jnp.asarray(2.0), "x2": jnp.asarray(5.0)}
        impls.append(Impl("jax jit", lambda: jax.block_until_ready(vg(p)),
                          lambda o: (float(o[0]), {k: np.asarray(a) for k, a in o[1].items()})))
    if torch is not None:
        x1 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        x2 = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)

        def tcall():
            val = torch.log(x1) + x1 * x2 - torch.sin(x2)
            return val, torch.autograd.grad(val, (x1, x2))
        impls.append(Impl("torch eager", tcall, lambda o: (
            float(o[0].detach()), {"x1": o[1][0].numpy(), "x2": o[1][1].numpy()})))
    case = "per call"
    rows = ctx.run_case("W1", case, impls, samples=ctx.samples(25, 7))
    if jax is None:
        ctx.na("W1", case, "jax jit", ctx.jax_why)
    if torch is None:
        ctx.na("W1", case, "torch eager", ctx.torch_why)

    hi = rows["lossc value_and_grad"].time
    lo = rows["lossc flat (low level)"].time
    if jax is not None and rows["jax jit"].time and hi:
        r = rows["jax jit"].time / hi
        ctx.target("W1 value_and_grad vs JAX jit", f"{fmt_ratio(r)}x faster", ">= 4x", r >= 4,
                   f"lossc {hi * 1e6:.2f} us, JAX {rows['jax jit'].time * 1e6:.2f} us",
                   anchor=("W1", case, "jax jit"))
        if lo:
            r2 = rows["jax jit"].time / lo
            ctx.target("W1 low-level flat call vs JAX jit", f"{fmt_ratio(r2)}x faster",
                       "(figure)", None, f"flat call {lo * 1e6:.2f} us")
    pre = rows["lossc prepared call"].time
    if pre:
        floor = rows["empty native call (machine limit)"].time
        ctx.target("W1 low-level path (prepared call)", f"{pre * 1e6:.2f} us", "< 1 us",
                   pre < 1e-6, "Model.prepare: preallocated flat buffers, one native call"
                   + (f"; an empty native call {floor * 1e6:.2f} us in the same run"
                      if floor else ""))
    else:
        ctx.target("W1 value_and_grad vs JAX jit", "n/a", ">= 4x", None, "JAX not installed")
