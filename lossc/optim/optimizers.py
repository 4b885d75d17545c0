"""Optimizers with PyTorch's update rules (torch.optim 2.x, single-tensor path).

Each optimizer is a small object: its hyperparameters are plain attributes (`lr`,
`momentum`, `betas`, ...), its state is a dict of arrays shaped like the parameters, and
`update(p, g)` is the whole rule written as in-place numpy on flat arrays, so that it
can be read against the formulas below (and, later, compiled to native code).

`step(params, grads)` updates `params` in place. It takes flat arrays (the layout of
`Model.pack_params`) or dicts of arrays with the same keys (updated key by key; the
state then follows the dict's key order). With g the gradient, p the parameters, and t
the step count starting at 1 (every formula is the one torch.optim uses, operation for
operation, so trajectories agree with torch to rounding):

SGD      g <- g + wd p
         momentum mu > 0:  b <- g (t = 1);  b <- mu b + (1 - dampening) g (t > 1)
                           g <- g + mu b (Nesterov)  or  g <- b
         p <- p - lr g
RMSprop  g <- g + wd p;   v <- alpha v + (1 - alpha) g^2
         centered:  a <- a + (1 - alpha) (g - a);  d <- sqrt(v - a^2) + eps
         else       d <- sqrt(v) + eps
         momentum mu > 0:  b <- mu b + g / d;  p <- p - lr b
         else              p <- p - lr g / d
Adam     g <- g + wd p  (L2 penalty folded into the gradient)
         m <- m + (1 - beta1) (g - m);   v <- beta2 v + (1 - beta2) g^2
         amsgrad: vmax <- max(vmax, v) and vmax replaces v below
         p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
AdamW    p <- p (1 - lr wd)  (decoupled weight decay), then Adam with wd = 0
Adam(lazy=True), torch.optim.SparseAdam's rule for a gradient given as its touched rows
         (a SparseRows: Model.value_and_sparse_grad; lossc.train's native steps), on
         those rows only (d1, d2 the moments' changes; untouched rows keep p, m and v):
         d1 <- (1 - beta1) (g - m);  d2 <- (1 - beta2) (g^2 - v);  m <- m + d1;
         v <- v + d2;  p <- p - lr sqrt(1 - beta2^t) / (1 - beta1^t) (d1 + m_old) /
         (sqrt(d2 + v_old) + eps); a dense gradient takes Adam's rule

Gradient clipping (`clip_norm=c`, any optimizer, as torch.nn.utils.clip_grad_norm_ over
all parameters together): g <- g min(1, c / (||g|| + 1e-6)) before the rule above, the
norm summed as the native steps sum it (global_norm). The caller's gradient array is
never modified.

An L1 penalty (`l1=`, SGD, Adam and AdamW) is a proximal step after the update, soft
thresholding (lossc.optim.prox), which gives exact zeros:
SGD      p <- prox_l1(p, lr l1)
Adam     p <- p - s m with s = (lr / (1 - beta1^t)) / (sqrt(v) / sqrt(1 - beta2^t) + eps),
         then p <- prox_l1(p, s l1): each coordinate thresholded by its own step, the
         proximal step in Adam's diagonal metric, so that its fixed points are those of
         the penalized objective
l1 is a number or a flat vector of weights >= 0 in pack order (0: not penalized;
lossc.optim.prox.l1_weights builds one from per-parameter values). The objective the
training driver reports does not include the penalty.
"""
from __future__ import annotations

import math

import numpy as np

from lossc.optim.config import flag, is_real
from lossc.optim.prox import check_l1, prox_l1
from lossc.runtime.fused import NativeUpdate
from lossc.runtime.sparse import SparseRows


def global_norm(g: np.ndarray) -> float:
    """The Euclidean norm of a flat gradient as clipping takes it, summed as the native
    steps sum it (codegen/fused.py): each square in float64, added one after another
    in order. np.dot sums in another order (and a float32 gradient in float32, which
    overflows from a norm of 1.8e19, where the steps' norm is finite), so clipping
    would scale the gradient by a coefficient a rounding apart from theirs."""
    squares = np.square(g, dtype=np.float64)
    return math.sqrt(float(np.add.accumulate(squares)[-1])) if squares.size else 0.0


def number(name: str, value, ok, what: str) -> float:
    """An optimizer's argument as a float: a real number (not a bool, a string or an
    array) for which ok(value) holds; else a ValueError naming it, as TrainConfig's
    options are checked, when the optimizer is made rather than at its first step."""
    if not (is_real(value) and ok(value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: learning rate, weight decay, clipping, step count and state."""

    l1 = None       # the L1 weights of a proximal step (SGD, Adam), or None

    def __init__(self, lr: float, weight_decay: float = 0.0, clip_norm: float | None = None):
        self.lr = number("lr: the learning rate", lr, lambda v: v > 0 and math.isfinite(v),
                         "a positive number")
        self.weight_decay = number("weight_decay", weight_decay,
                                   lambda v: 0 <= v < math.inf, "a finite number >= 0")
        self.clip_norm = None if clip_norm is None else number(
            "clip_norm", clip_norm, lambda v: v > 0, "a positive number")
        self.t = 0          # steps taken
        self.state: dict = {}

    def reset(self) -> None:
        """Forget the step count and all state (moments, momentum buffers)."""
        self.t = 0
        self.state = {}

    def step(self, params, grads) -> None:
        """One update of `params` in place from `grads` (flat arrays, or dicts of
        arrays with the same keys)."""
        if isinstance(params, dict):
            self._step_dict(params, grads)
            return
        if not isinstance(params, np.ndarray) or params.dtype.kind != "f":
            raise TypeError("params must be a float numpy array (updated in place) or a "
                            "dict of them")
        g = np.asarray(grads)
        if g.shape != params.shape:
            raise ValueError(f"grads have shape {g.shape}, params {params.shape}")
        self._step_flat(params, g)

    def _step_dict(self, params: dict, grads: dict) -> None:
        # The rules are elementwise except for clipping's global norm, so the dict is
        # packed into one flat vector, stepped, and written back. A gradient given as
        # its touched rows (SparseRows) is made dense, but for lazy Adam (_step_rows).
        if any(isinstance(g, SparseRows) for g in grads.values()):
            if getattr(self, "lazy", False):
                self._step_rows(params, grads)
                return
            grads = {k: g.to_dense() if isinstance(g, SparseRows) else g
                     for k, g in grads.items()}
        keys = list(params)
        missing = [k for k in keys if k not in grads]
        if missing or len(grads) != len(keys):
            raise ValueError(f"grads must have the keys of params {keys}, got {list(grads)}")
        arrays = []
        for k in keys:
            a = params[k]
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                raise TypeError(f"params[{k!r}] must be a float numpy array (updated in place)")
            if np.shape(grads[k]) != a.shape:
                raise ValueError(f"grads[{k!r}] has shape {np.shape(grads[k])}, params "
                                 f"{a.shape}")
            arrays.append(a)
        dtype = np.result_type(*arrays)
        flat_p = np.concatenate([a.ravel() for a in arrays]).astype(dtype, copy=False)
        flat_g = np.concatenate([np.ravel(grads[k]) for k in keys]).astype(dtype, copy=False)
        self._step_flat(flat_p, flat_g)
        off = 0
        for a in arrays:
            a[...] = flat_p[off:off + a.size].reshape(a.shape)
            off += a.size

    def _step_flat(self, p: np.ndarray, g: np.ndarray) -> None:
        self.t += 1
        if self.clip_norm is not None:
            coef = self.clip_norm / (global_norm(g) + 1e-6)
            if coef < 1.0:
                g = g * coef
        self.update(p, g)

    def _buf(self, name: str, like: np.ndarray) -> np.ndarray:
        """A state array, zero at first; a new one if the parameter count changed."""
        b = self.state.get(name)
        if b is None or b.shape != like.shape or b.dtype != like.dtype:
            b = self.state[name] = np.zeros_like(like)
        return b

    def update(self, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _shrink(self, p: np.ndarray, step) -> None:
        """The L1 proximal step in place: p <- prox_l1(p, step * l1), step the rule's
        step size (a number, or an array like p)."""
        l1 = self.l1
        if isinstance(l1, np.ndarray) and l1.shape != p.shape:
            raise ValueError(f"l1 has {l1.size} weights, the parameters {p.size} "
                             f"coordinates")
        prox_l1(p, step * l1, out=p)

    def native_update(self) -> NativeUpdate | None:
        """This update as lossc's native training steps take it (runtime/fused.py), or
        None where they do not implement it exactly: they implement SGD, RMSprop, Adam
        and AdamW, not a subclass, whose update may differ, and no L1 proximal step."""
        return None

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                          if k not in ("state", "t") and not k.startswith("_"))
        return f"{type(self).__name__}({attrs})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum. See the module
    docstring for the update."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None, l1=None):
        super().__init__(lr, weight_decay, clip_norm)
        self.l1 = check_l1(l1)
        self.momentum = number("momentum", momentum, lambda v: 0 <= v < math.inf,
                               "a finite number >= 0")
        self.dampening = number("dampening", dampening, math.isfinite, "a finite number")
        self.nesterov = flag("nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and zero dampening")

    def update(self, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = self.state.get("momentum")
            if buf is None or buf.shape != p.shape:
                buf = self.state["momentum"] = np.array(g, dtype=p.dtype)
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g
        if self.l1 is not None:
            self._shrink(p, self.lr)

    def native_update(self) -> NativeUpdate | None:
        if type(self) is not SGD or self.l1 is not None:
            return None
        return NativeUpdate("sgd", self.lr, a=self.momentum, weight_decay=self.weight_decay,
                            dampening=self.dampening, clip_norm=self.clip_norm,
                            nesterov=self.nesterov, state=("momentum", None, None),
                            used=frozenset({"momentum"} if self.momentum else ()))


class RMSprop(Optimizer):
    """RMSprop: steps scaled by a running root mean square of the gradient."""

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None):
        super().__init__(lr, weight_decay, clip_norm)
        self.alpha = number("alpha", alpha, lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.eps = number("eps", eps, lambda v: 0 <= v < math.inf, "a finite number >= 0")
        self.momentum = number("momentum", momentum, lambda v: 0 <= v < math.inf,
                               "a finite number >= 0")
        self.centered = flag("centered", centered)

    def update(self, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        v = self._buf("square_avg", p)
        v *= self.alpha
        v += (1 - self.alpha) * g * g     # torch's addcmul order: (c g) g
        if self.centered:
            a = self._buf("grad_avg", p)
            a += (1 - self.alpha) * (g - a)     # torch: grad_avg.lerp_(grad, 1 - alpha)
            d = np.sqrt(v - a * a)
        else:
            d = np.sqrt(v)
        d += self.eps
        if self.momentum > 0:
            buf = self._buf("momentum", p)
            buf *= self.momentum
            buf += g / d
            p -= self.lr * buf
        else:
            p -= self.lr * g / d

    def native_update(self) -> NativeUpdate | None:
        if type(self) is not RMSprop:
            return None
        used = {"square_avg"} | ({"momentum"} if self.momentum > 0 else set()) \
            | ({"grad_avg"} if self.centered else set())
        return NativeUpdate("rmsprop", self.lr, a=self.alpha, b=self.momentum, eps=self.eps,
                            weight_decay=self.weight_decay, clip_norm=self.clip_norm,
                            centered=self.centered,
                            state=("momentum", "square_avg", "grad_avg"),
                            used=frozenset(used))


class Adam(Optimizer):
    """Adam (Kingma and Ba), with PyTorch's L2 weight decay and optional AMSGrad."""

    decoupled = False   # AdamW sets this: weight decay applied to p, not folded into g

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False,
                 clip_norm: float | None = None, l1=None, lazy: bool = False):
        super().__init__(lr, weight_decay, clip_norm)
        self.l1 = check_l1(l1)
        if lazy and (weight_decay or amsgrad or clip_norm is not None or l1 is not None
                     or self.decoupled):
            raise ValueError("lazy=True (torch.optim.SparseAdam's rule) takes no "
                             "weight_decay, amsgrad, clip_norm or l1, as SparseAdam")
        self.lazy = flag("lazy", lazy)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = tuple(number("betas", b, lambda v: 0 <= v < 1, "a number in [0, 1)")
                           for b in (b1, b2))
        self.eps = number("eps", eps, lambda v: 0 <= v < math.inf, "a finite number >= 0")
        self.amsgrad = flag("amsgrad", amsgrad)

    def update(self, p, g):
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m, v = self._buf("exp_avg", p), self._buf("exp_avg_sq", p)
        m += (1 - b1) * (g - m)             # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= b2
        v += (1 - b2) * g * g
        bc1 = 1 - b1 ** self.t
        bc2_sqrt = (1 - b2 ** self.t) ** 0.5
        if self.amsgrad:
            vmax = self._buf("max_exp_avg_sq", p)
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v) / bc2_sqrt
        denom += self.eps
        if self.l1 is not None:
            step = (self.lr / bc1) / denom
            p -= step * m
            self._shrink(p, step)
            return
        p -= (self.lr / bc1) * m / denom     # torch's addcdiv order: (c m) / denom

    def _step_rows(self, params: dict, grads: dict) -> None:
        """Lazy Adam on a dict: a parameter whose gradient is a SparseRows takes
        SparseAdam's rule on its rows, the others Adam's (the state flat over the
        parameters in the dict's order, as _step_dict keeps it)."""
        keys = list(params)
        if set(grads) != set(keys):
            raise ValueError(f"grads must have the keys of params {keys}, got {list(grads)}")
        dtype = np.result_type(*[params[k] for k in keys])
        total = sum(params[k].size for k in keys)
        m = self._buf("exp_avg", np.empty(total, dtype=dtype))
        v = self._buf("exp_avg_sq", np.empty(total, dtype=dtype))
        self.t += 1
        b1, b2 = self.betas
        off = 0
        for k in keys:
            p, g = params[k], grads[k]
            mk, vk = m[off:off + p.size], v[off:off + p.size]
            off += p.size
            if isinstance(g, SparseRows):
                self._sparse_adam(p.reshape(p.shape[0], -1), g,
                                  mk.reshape(p.shape[0], -1), vk.reshape(p.shape[0], -1))
                continue
            flat = p.reshape(-1)
            g = np.asarray(g, dtype=dtype).reshape(-1)
            mk += (1 - b1) * (g - mk)
            vk *= b2
            vk += (1 - b2) * g * g
            denom = np.sqrt(vk) / (1 - b2 ** self.t) ** 0.5
            denom += self.eps
            flat -= (self.lr / (1 - b1 ** self.t)) * mk / denom
            if not np.shares_memory(flat, p):
                p[...] = flat.reshape(p.shape)

    def _sparse_adam(self, p, g: SparseRows, m, v) -> None:
        """torch.optim.SparseAdam's update of the touched rows (2-d views: rows first)."""
        b1, b2 = self.betas
        rows = g.rows
        values = np.asarray(g.values, dtype=p.dtype).reshape(len(rows), -1)
        m_old, v_old = m[rows], v[rows]
        d1 = (values - m_old) * (1 - b1)
        d2 = (values * values - v_old) * (1 - b2)
        m[rows] = m_old + d1
        v[rows] = v_old + d2
        step = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        p[rows] = p[rows] - step * ((d1 + m_old) / (np.sqrt(d2 + v_old) + self.eps))

    def native_update(self) -> NativeUpdate | None:
        if type(self) not in (Adam, AdamW) or self.l1 is not None:
            return None
        used = {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if self.amsgrad else set())
        return NativeUpdate("adam", self.lr, a=self.betas[0], b=self.betas[1], eps=self.eps,
                            weight_decay=self.weight_decay, clip_norm=self.clip_norm,
                            amsgrad=self.amsgrad, decoupled=self.decoupled,
                            state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                            used=frozenset(used), lazy=self.lazy)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): p <- p (1 - lr wd)
    before the Adam step. Default weight_decay 1e-2, as in PyTorch."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False,
                 clip_norm: float | None = None, l1=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, clip_norm, l1)
