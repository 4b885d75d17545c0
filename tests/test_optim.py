"""Optimizers against textbook updates written here in NumPy (and against torch.optim
when PyTorch is installed), and the learning-rate schedules."""
import math

import numpy as np
import pytest

from lossc.optim import schedules
from lossc.optim.fullbatch import LBFGS, NewtonCG
from lossc.optim.names import by_name
from lossc.optim.optimizers import SGD, Adam, AdamW, RMSprop

A = np.diag([1.0, 3.0, 0.5, 2.0])
C = np.array([1.0, -2.0, 0.5, 0.0])
P0 = np.array([0.3, -1.2, 2.0, 0.7])


def quad_grad(p):
    """Gradient of an anisotropic quadratic plus a quartic: a small real problem."""
    return A @ p + 0.1 * p ** 3 - C


def reference(kind, cfg, p, steps):
    """The textbook update rules (the formulas of torch.optim's documentation), written
    independently of lossc.optim: the trajectory of `steps` steps from p."""
    p = p.copy()
    m, v, vmax, a = (np.zeros_like(p) for _ in range(4))
    buf = None
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    out = []
    for t in range(1, steps + 1):
        g = quad_grad(p)
        if cfg.get("clip_norm"):
            g = g * min(1.0, cfg["clip_norm"] / (np.linalg.norm(g) + 1e-6))
        if kind == "sgd":
            g = g + wd * p
            mu = cfg.get("momentum", 0.0)
            if mu:
                buf = g.copy() if buf is None else mu * buf + (1 - cfg.get("dampening", 0)) * g
                g = g + mu * buf if cfg.get("nesterov") else buf
            p = p - lr * g
        elif kind == "rmsprop":
            g = g + wd * p
            al, eps = cfg.get("alpha", 0.99), cfg.get("eps", 1e-8)
            v = al * v + (1 - al) * g * g
            if cfg.get("centered"):
                a = al * a + (1 - al) * g
                d = np.sqrt(v - a * a) + eps
            else:
                d = np.sqrt(v) + eps
            if cfg.get("momentum", 0) > 0:
                m = cfg["momentum"] * m + g / d
                p = p - lr * m
            else:
                p = p - lr * g / d
        else:
            b1, b2 = cfg.get("betas", (0.9, 0.999))
            wd = cfg.get("weight_decay", 0.01 if kind == "adamw" else 0.0)
            if kind == "adamw":
                p = p * (1 - lr * wd)
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            if cfg.get("amsgrad"):
                vmax = np.maximum(vmax, v)
            mh = m / (1 - b1 ** t)
            vh = (vmax if cfg.get("amsgrad") else v) / (1 - b2 ** t)
            p = p - lr * mh / (np.sqrt(vh) + cfg.get("eps", 1e-8))
        out.append(p.copy())
    return out


CONFIGS = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, weight_decay=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.5, clip_norm=1.0)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
    ("adam", dict(lr=0.05, weight_decay=0.01, amsgrad=True)),
    ("adam", dict(lr=0.1, clip_norm=0.5)),
    ("adamw", dict(lr=0.05)),
    ("adamw", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
]
IDS = [f"{k}-{'-'.join(f'{a}={b}' for a, b in c.items())}" for k, c in CONFIGS]
CLASSES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


@pytest.mark.parametrize("kind, cfg", CONFIGS, ids=IDS)
def test_optimizer_matches_textbook_update_step_for_step(kind, cfg):
    opt, p = CLASSES[kind](**cfg), P0.copy()
    ref = reference(kind, cfg, P0, 100)
    for t in range(100):
        opt.step(p, quad_grad(p))
        np.testing.assert_allclose(p, ref[t], rtol=1e-12, atol=1e-14, err_msg=f"step {t + 1}")
    assert opt.t == 100


@pytest.mark.parametrize("kind, cfg", CONFIGS, ids=IDS)
def test_optimizer_matches_torch(kind, cfg):
    torch = pytest.importorskip("torch")
    cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
           "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    tp = torch.tensor(P0.copy(), dtype=torch.float64, requires_grad=True)
    topt = cls([tp], foreach=False, **{k: v for k, v in cfg.items() if k != "clip_norm"})
    opt, p = CLASSES[kind](**cfg), P0.copy()
    for t in range(100):
        topt.zero_grad()
        tp.grad = torch.tensor(quad_grad(tp.detach().numpy()), dtype=torch.float64)
        if cfg.get("clip_norm"):
            torch.nn.utils.clip_grad_norm_([tp], cfg["clip_norm"])
        topt.step()
        opt.step(p, quad_grad(p))
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=f"step {t + 1}")


def test_float32_parameters_stay_float32():
    p = P0.astype(np.float32)
    opt = Adam(lr=0.01, weight_decay=0.1)
    for _ in range(5):
        opt.step(p, quad_grad(p.astype(np.float64)).astype(np.float32))
    assert p.dtype == np.float32 and opt.state["exp_avg"].dtype == np.float32
    ref = reference("adam", dict(lr=0.01, weight_decay=0.1), P0, 5)[-1]
    np.testing.assert_allclose(p, ref, rtol=1e-5)


def test_step_on_dicts_matches_the_flat_step():
    params = {"a": np.array([1.0, 2.0]), "b": np.array(3.0)}
    grads = {"a": np.array([1.0, 1.0]), "b": np.array(2.0)}
    SGD(lr=0.1).step(params, grads)
    np.testing.assert_allclose(params["a"], [0.9, 1.9])
    assert float(params["b"]) == pytest.approx(2.8)
    # clipping sees the global norm over every array of the dict
    d = {"a": P0[:3].copy(), "b": np.array(P0[3])}
    flat = P0.copy()
    o1, o2 = Adam(lr=0.1, clip_norm=0.3), Adam(lr=0.1, clip_norm=0.3)
    for _ in range(10):
        g = quad_grad(np.append(d["a"], d["b"]))
        o1.step(d, {"a": g[:3], "b": np.array(g[3])})
        o2.step(flat, quad_grad(flat))
    np.testing.assert_array_equal(np.append(d["a"], d["b"]), flat)


def test_clipping_scales_a_float32_gradient_whose_squared_norm_overflows_float32():
    """The norm of a float32 gradient is summed in float64, as the native steps sum it:
    in float32 a norm past 1.8e19 came out infinite and the step was 0."""
    p = np.zeros(3, dtype=np.float32)
    SGD(lr=0.1, clip_norm=1.0).step(p, np.array([3e19, 4e19, 0.0], dtype=np.float32))
    np.testing.assert_allclose(p, [-0.06, -0.08, 0.0], rtol=1e-6)


def test_gradients_are_not_modified():
    g = np.array([3.0, 4.0])
    for opt in (SGD(0.1, momentum=0.9, weight_decay=0.1), RMSprop(0.1, centered=True),
                Adam(0.1, clip_norm=1.0), AdamW(0.1)):
        opt.step(np.ones(2), g)
        opt.step(np.ones(2), g)
        np.testing.assert_array_equal(g, [3.0, 4.0])


def test_reset_forgets_the_state():
    opt = Adam(lr=0.1)
    p = np.zeros(2)
    opt.step(p, np.ones(2))
    first = p.copy()
    assert opt.t == 1 and set(opt.state) == {"exp_avg", "exp_avg_sq"}
    opt.reset()
    assert opt.t == 0 and not opt.state
    p[:] = 0
    opt.step(p, np.ones(2))
    np.testing.assert_array_equal(p, first)


def test_bad_inputs_and_options():
    with pytest.raises(ValueError, match="learning rate"):
        SGD(lr=0)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="clip_norm"):
        Adam(clip_norm=-1)
    with pytest.raises(TypeError, match="float numpy array"):
        SGD(0.1).step([1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        SGD(0.1).step(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="keys"):
        SGD(0.1).step({"a": np.zeros(2)}, {"b": np.zeros(2)})


def test_by_name():
    assert type(by_name("sgd", 0.1)) is SGD and by_name("sgd", 0.1).momentum == 0
    m = by_name("momentum", 0.1)
    assert m.momentum == 0.9 and not m.nesterov
    n = by_name("nesterov", 0.1, momentum=0.8)
    assert n.momentum == 0.8 and n.nesterov
    assert by_name("rmsprop", 0.1).momentum == 0
    assert by_name("adamw", 0.1).weight_decay == 0.01
    a = by_name("adam", 0.1, weight_decay=0.5, clip_norm=2.0)
    assert (type(a), a.lr, a.weight_decay, a.clip_norm) == (Adam, 0.1, 0.5, 2.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        by_name("bfgs", 0.1)
    assert type(by_name("lbfgs")) is LBFGS and by_name("lbfgs").lr == 1.0
    assert type(by_name("newton-cg", 0.5)) is NewtonCG and by_name("newton-cg", 0.5).lr == 0.5
    with pytest.raises(ValueError, match="--clip-norm does not apply to lbfgs"):
        by_name("lbfgs", clip_norm=1.0)
    with pytest.raises(ValueError, match="does not apply"):
        by_name("adam", 0.1, momentum=0.9)


# ---------------------------------------------------------------- schedules


def test_schedules_follow_pytorch_closed_forms():
    assert schedules.constant()(0.1, 7) == 0.1
    assert [schedules.step(2, 0.5)(1.0, k) for k in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert schedules.exponential(0.9)(2.0, 3) == pytest.approx(2.0 * 0.9 ** 3)
    c = schedules.cosine(10, eta_min=0.01)
    assert c(0.1, 0) == pytest.approx(0.1)
    assert c(0.1, 5) == pytest.approx(0.01 + 0.09 / 2)
    assert c(0.1, 10) == pytest.approx(0.01) and c(0.1, 25) == pytest.approx(0.01)
    assert schedules.cosine().over(4)(1.0, 2) == pytest.approx(0.5)


def test_schedules_match_torch_lr_schedulers():
    torch = pytest.importorskip("torch")
    cases = [(schedules.step(3, 0.5), torch.optim.lr_scheduler.StepLR, dict(step_size=3,
                                                                            gamma=0.5)),
             (schedules.exponential(0.8), torch.optim.lr_scheduler.ExponentialLR,
              dict(gamma=0.8)),
             (schedules.cosine(10, 0.001), torch.optim.lr_scheduler.CosineAnnealingLR,
              dict(T_max=10, eta_min=0.001))]
    for ours, cls, kw in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = cls(opt, **kw)
        for k in range(11):
            assert ours(0.1, k) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), (cls, k)
            opt.step()
            sched.step()


def test_parse_schedule():
    assert schedules.parse(None) == schedules.constant()
    assert schedules.parse("step:3:0.5") == schedules.step(3, 0.5)
    assert schedules.parse("step:3") == schedules.step(3, 0.1)
    assert schedules.parse("exponential:0.95") == schedules.exponential(0.95)
    assert schedules.parse("cosine") == schedules.cosine()
    assert schedules.parse("cosine:20:0.001") == schedules.cosine(20, 0.001)
    for bad in ("wiggle", "step", "step:x", "exponential", "cosine:1:2:3"):
        with pytest.raises(ValueError, match="bad schedule"):
            schedules.parse(bad)
    with pytest.raises(ValueError, match="step_size"):
        schedules.parse("step:0")
    assert math.isclose(schedules.parse("cosine:4")(1.0, 4), 0.0, abs_tol=1e-15)
