"""lossc: a compiler from loss functions written as math to native loss-and-gradient code.

    import lossc
    m = lossc.compile("model.loss", dims={"D": 32})
    theta = m.init_params(seed=0)
    value, grads = m.value_and_grad(theta, x=X, y=Y)
"""
from lossc.version import __version__
from lossc.source import CompileError
from lossc.api import LosscWarning, compile, load
from lossc.options import Options
from lossc.runtime.model import Model
from lossc.optim import (LBFGS, SGD, Adam, AdamW, NewtonCG, RMSprop, TrainResult,
                         load_params, save_params, train)
from lossc.optim.laplace import Laplace, LaplaceError, laplace

__all__ = ["compile", "load", "Options", "CompileError", "LosscWarning", "Model", "train",
           "TrainResult", "save_params", "load_params", "SGD", "RMSprop", "Adam", "AdamW",
           "LBFGS", "NewtonCG", "laplace", "Laplace", "LaplaceError", "__version__"]
