"""Full-batch optimizers for the training driver: L-BFGS (OWL-QN with an L1 penalty)
and Newton-CG, each iteration a line search over the whole training set.

    result = train(model, data, optimizer=LBFGS(), tol_grad=1e-8)
    result = train(model, data, optimizer=LBFGS(l1=l1_weights(model, {"w": 0.01})))
    result = train(model, data, optimizer=NewtonCG())        # needs model.hvp

A first-order optimizer (SGD, Adam, ...) steps from one gradient; these need the
objective at several points of a line search and, for Newton-CG, Hessian-vector
products. So they have no `step(params, grads)`: `train` runs them in batch descent
only (batch_size None: an epoch is one iteration, `epochs` counts iterations), through
lossc.optim.stepper.LineSearchSteps, with the iteration of the library's minimizers
(quasi_newton.lbfgs_step, orthant_wise.owlqn_step, second_order.NewtonCGStep) on the
objective over the training set, in float64. Progress, history, best parameters,
validation, callbacks and the stopping rules are the driver's, as for the others.

Options:
- lr (1.0): the first trial step of each line search along the method's direction
  (1 is the natural step of a Newton or quasi-Newton direction). The line search picks
  each step, so a learning-rate schedule does not apply (train refuses one).
- tol_grad, tol_loss: the method's own stopping tests, as scipy's L-BFGS-B makes
  them: the inf-norm of the gradient (OWL-QN: of the pseudo-gradient) <= tol_grad
  (default 1e-5), the relative change of the objective (f_prev - f) / max(|f_prev|,
  |f|, 1) <= tol_loss (default 2.2e-9); None turns one off. The result's `stopped` is
  then "tol_grad" or "tol_loss". train's own tol_grad and tol_loss (the 2-norm, the
  absolute change) apply as well; where train is given either, the optimizer's
  defaults step aside (a run asked for train(tol_grad=1e-8) is not cut short at the
  default 1e-5), and only the tolerances given to the optimizer itself apply.
- relative_tol_grad (False): tol_grad bounds the gradient's inf-norm relative to the
  size of the objective at the initial parameters, |g|_inf <= tol_grad * |f(theta0)|:
  a test that means the same whatever scale the objective has (a sum or a mean over
  the samples, a factor C on it), as scikit-learn's `tol` does on its objective
  divided by C and the number of samples (lossc.sklearn's default, docs/sklearn.md).
- LBFGS: history_size (10), the curvature pairs kept; l1, an L1 penalty (a number, or
  a flat vector of weights in pack order, lossc.optim.prox.l1_weights), minimized by
  OWL-QN with exact zeros.
- NewtonCG: max_cg, the conjugate-gradient iterations per Newton iteration (default
  20 n for n parameters).

A line search that finds no decrease stops the run ("line_search"; near the optimum
that is rounding: the parameters are then as good as the gradient can tell). With
neither `epochs` nor `steps`, `train` runs at most DEFAULT_ITERATIONS iterations.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from lossc.codegen.unit_names import TWO_LOOP
from lossc.optim import linesearch, schedules
from lossc.optim.optimizers import Optimizer
from lossc.optim.orthant_wise import MAX_BACKTRACKS, owlqn_step, pseudo_gradient
from lossc.optim.prox import check_l1
from lossc.optim.quasi_newton import TOL_GRAD, TOL_LOSS, lbfgs_step
from lossc.optim.second_order import NewtonCGStep
from lossc.optim.solver import Objective, Point, count, tolerance

DEFAULT_ITERATIONS = 1000


class _Default(float):
    """A tolerance the optimizer was not given: its default value, marked as such."""


class FullBatchOptimizer(Optimizer):
    """What the driver asks of a full-batch optimizer: `iteration(objective, hvp)`, the
    step function of its method (lossc.optim.solver) over the training objective, and
    `stationarity(point)`, the vector its tol_grad measures."""

    full_batch_only = True
    needs_hvp = False

    def __init__(self, lr: float, tol_grad: Optional[float], tol_loss: Optional[float],
                 relative_tol_grad: bool = False):
        super().__init__(lr)
        self.tol_grad = tolerance("tol_grad", tol_grad)
        if not isinstance(relative_tol_grad, bool):
            raise ValueError(f"relative_tol_grad must be True or False, got "
                             f"{relative_tol_grad!r}")
        self.relative_tol_grad = relative_tol_grad
        self.tol_loss = tolerance("tol_loss", tol_loss)
        self._defaulted = {name for name, v in (("tol_grad", tol_grad),
                                                ("tol_loss", tol_loss))
                           if isinstance(v, _Default)}

    def own_tolerances(self, train_has_tolerance: bool) -> tuple:
        """(tol_grad, tol_loss) the run tests (None: off): those given to the optimizer,
        and its defaults only when train was given no tolerance of its own."""
        def own(name):
            if train_has_tolerance and name in self._defaulted:
                return None
            return getattr(self, name)
        return own("tol_grad"), own("tol_loss")

    def step(self, params, grads) -> None:
        raise TypeError(f"{type(self).__name__} takes no step from a gradient alone (its "
                        f"iterations are line searches): train with it through "
                        f"lossc.train (batch_size=None), or minimize a callable with "
                        f"lossc.optim.{self.library}")

    def check_model(self, model) -> None:
        """A ValueError if the model lacks what the method needs."""

    def iteration(self, objective: Objective, hvp: Optional[Callable],
                  code=None) -> Callable:
        """The method's step function over `objective`; code: the model's machine code
        (runtime/code.py), for the library units the method runs natively, or None."""
        raise NotImplementedError       # pragma: no cover

    def stationarity(self, p: Point) -> np.ndarray:
        return p.grad


class LBFGS(FullBatchOptimizer):
    """L-BFGS with a strong-Wolfe line search; OWL-QN when l1 is given (module
    docstring)."""

    library = "lbfgs"

    def __init__(self, lr: float = 1.0, history_size: int = 10,
                 tol_grad: Optional[float] = _Default(TOL_GRAD),
                 tol_loss: Optional[float] = _Default(TOL_LOSS), l1=None,
                 line_search_evals: Optional[int] = None, relative_tol_grad: bool = False):
        super().__init__(lr, tol_grad, tol_loss, relative_tol_grad)
        self.history_size = count("history_size", history_size)
        self.l1 = check_l1(l1)
        default = linesearch.MAX_EVALS if self.l1 is None else MAX_BACKTRACKS
        self.line_search_evals = count("line_search_evals", default if line_search_evals
                                       is None else line_search_evals)

    def iteration(self, objective, hvp=None, code=None):
        if self.l1 is None:
            return lbfgs_step(objective, m=self.history_size, first_step=self.lr,
                              line_search_evals=self.line_search_evals,
                              two_loop=None if code is None else code.function(TWO_LOOP))
        return owlqn_step(objective, self.l1, m=self.history_size, first_step=self.lr,
                          line_search_evals=self.line_search_evals)

    def stationarity(self, p):
        if self.l1 is None:
            return p.grad
        return pseudo_gradient(p.x, p.grad, self.l1)


class NewtonCG(FullBatchOptimizer):
    """Newton-CG: truncated conjugate gradients on the model's Hessian-vector products
    (model.hvp), then a strong-Wolfe line search (module docstring)."""

    library = "newton_cg"
    needs_hvp = True

    def __init__(self, lr: float = 1.0, tol_grad: Optional[float] = _Default(TOL_GRAD),
                 tol_loss: Optional[float] = _Default(TOL_LOSS), max_cg: Optional[int] = None,
                 relative_tol_grad: bool = False):
        super().__init__(lr, tol_grad, tol_loss, relative_tol_grad)
        self.max_cg = None if max_cg is None else count("max_cg", max_cg)

    def check_model(self, model) -> None:
        if not callable(getattr(model, "hvp", None)):
            raise ValueError("NewtonCG needs the model's Hessian-vector products "
                             "(model.hvp), which this model does not provide; train it "
                             "with LBFGS instead")

    def iteration(self, objective, hvp, code=None):
        return NewtonCGStep(objective, hvp, max_cg=self.max_cg, first_step=self.lr)


def train_options(opt, options: dict) -> dict:
    """train's keyword options with a full-batch optimizer's defaults filled in:
    batch_size None and, without epochs or steps, DEFAULT_ITERATIONS epochs. Other
    optimizers' options are returned as they are."""
    if not getattr(opt, "full_batch_only", False):
        return options
    options = {"batch_size": None, **options}
    if options.get("epochs") is None and options.get("steps") is None:
        options["epochs"] = DEFAULT_ITERATIONS
    return options


def full_batch_config(opt, config):
    """A TrainConfig given as config= with a full-batch optimizer's defaults filled in
    where it holds TrainConfig's own (as train_options does for keywords): batch_size
    None for the default 64, which such an optimizer cannot take, and without epochs or
    steps, DEFAULT_ITERATIONS epochs."""
    if not getattr(opt, "full_batch_only", False):
        return config
    changes = {}
    if config.batch_size == type(config).__dataclass_fields__["batch_size"].default:
        changes["batch_size"] = None
    if config.epochs is None and config.steps is None:
        changes["epochs"] = DEFAULT_ITERATIONS
    return dataclasses.replace(config, **changes) if changes else config


def check_run(opt, model, config) -> None:
    """Before a run: the L1 weights fit the model; a full-batch optimizer runs in batch
    descent on a model that gives what it needs. ValueErrors naming the option."""
    if opt.l1 is not None:
        check_l1(opt.l1, model.n_params)
    if not getattr(opt, "full_batch_only", False):
        return
    if config.batch_size and model.inputs:
        raise ValueError(f"{type(opt).__name__} is a full-batch optimizer (each iteration "
                         f"a line search over the whole training set): train with "
                         f"batch_size=None, not {config.batch_size}")
    if not isinstance(config.schedule, schedules.Constant):
        raise ValueError(f"a learning-rate schedule does not apply to "
                         f"{type(opt).__name__}: its line search picks each step")
    opt.check_model(model)
