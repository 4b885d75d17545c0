"""Training: optimizers with PyTorch's update rules, learning-rate schedules, data
loading, the mini-batch driver, and the SciPy bridge; and full-batch minimizers over
callables (L-BFGS, OWL-QN, Newton-CG, Newton) and the L1 proximal step.

The driver in its pieces: config.py (the options and the run's plan), prepare.py (the
data made ready), stepper.py (an epoch's steps), objectives.py (passes over whole data
sets), monitor.py (history, bests, stopping rules), driver.py (train, joining them).

    from lossc.optim import train, Adam
    result = train(model, data={"x": X, "y": Y}, optimizer=Adam(lr=0.01), epochs=20)

    from lossc.optim import lbfgs
    fun, x0 = model.scipy_objective(x=X, y=Y)
    res = lbfgs(fun, x0)                       # res.x, res.value, res.stopped
"""
from lossc.optim import schedules
from lossc.optim.config import Plan, TrainConfig
from lossc.optim.data import DataError, load_data
from lossc.optim.driver import EpochInfo, TrainResult, train
from lossc.optim.fullbatch import LBFGS, NewtonCG
from lossc.optim.layout import Layout
from lossc.optim.linesearch import strong_wolfe
from lossc.optim.metrics import accuracy, metric, per_sample_loss
from lossc.optim.names import by_name
from lossc.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from lossc.optim.orthant_wise import owlqn
from lossc.optim.params_io import TrainedWith, load_params, save_params, trained_with
from lossc.optim.prox import l1_weights, prox_l1
from lossc.optim.quasi_newton import lbfgs
from lossc.optim.second_order import newton, newton_cg
from lossc.optim.solver import Iterate, MinimizeResult
from lossc.runtime.scipy_bridge import pack_params, scipy_objective, unpack_params

__all__ = ["train", "TrainConfig", "Plan", "TrainResult", "EpochInfo", "SGD", "RMSprop",
           "Adam", "AdamW", "LBFGS", "NewtonCG", "Optimizer", "by_name", "schedules",
           "load_data", "DataError", "scipy_objective", "pack_params", "unpack_params",
           "accuracy", "metric", "per_sample_loss", "save_params", "load_params", "trained_with",
           "TrainedWith", "lbfgs", "owlqn",
           "newton_cg", "newton", "strong_wolfe", "MinimizeResult", "Iterate", "prox_l1",
           "l1_weights", "Layout"]
