"""Optimizers by their command-line names (lossc train --optimizer): the first-order
ones of lossc.optim.optimizers and the full-batch ones of lossc.optim.fullbatch."""
from __future__ import annotations

from lossc.optim.fullbatch import LBFGS, NewtonCG
from lossc.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop

NAMES = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "lbfgs", "newton-cg")
FULL_BATCH = ("lbfgs", "newton-cg")      # lossc.optim.fullbatch: batch descent only


def by_name(name: str, lr: float | None = None, momentum: float | None = None,
            weight_decay: float | None = None, clip_norm: float | None = None,
            l1=None) -> Optimizer:
    """An optimizer from its command-line name: sgd, momentum (SGD with momentum 0.9
    unless given), nesterov, rmsprop, adam, adamw, lbfgs, newton-cg. Options left as
    None take the optimizer's defaults (lr: 0.01 for the SGD family and RMSprop, 1e-3
    for Adam, 1 for L-BFGS and Newton-CG, whose lr is the line search's first trial
    step; they take none of the other options but L-BFGS's l1). l1: the L1 weights of
    the SGD family, Adam, AdamW and L-BFGS (lossc.optim.prox)."""
    name = name.lower()
    if l1 is not None and name in ("rmsprop", "newton-cg"):
        raise ValueError(f"--l1 does not apply to {name}")
    if name in FULL_BATCH:
        return _full_batch(name, lr, l1, momentum=momentum, weight_decay=weight_decay,
                           clip_norm=clip_norm)
    kw = {"clip_norm": clip_norm}
    if l1 is not None:
        kw["l1"] = l1
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    if lr is not None:
        kw["lr"] = lr
    if name in ("sgd", "momentum", "nesterov"):
        mu = momentum if momentum is not None else (0.0 if name == "sgd" else 0.9)
        return SGD(momentum=mu, nesterov=name == "nesterov", **kw)
    if name == "rmsprop":
        return RMSprop(momentum=momentum or 0.0, **kw)
    if momentum is not None and name in ("adam", "adamw"):
        raise ValueError(f"--momentum does not apply to {name} (it uses betas)")
    if name == "adam":
        return Adam(**kw)
    if name == "adamw":
        return AdamW(**kw)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(NAMES)}")


def _full_batch(name: str, lr: float | None, l1, **others) -> Optimizer:
    for option, value in others.items():
        if value is not None:
            raise ValueError(f"--{option.replace('_', '-')} does not apply to {name}")
    kw = {} if lr is None else {"lr": lr}
    return LBFGS(l1=l1, **kw) if name == "lbfgs" else NewtonCG(**kw)
