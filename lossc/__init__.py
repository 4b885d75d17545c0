"""lossc: a compiler from loss functions written as math to native loss-and-gradient code.

    import lossc
    m = lossc.compile("model.loss", dims={"D": 32})
    theta = m.init_params(seed=0)
    value, grads = m.value_and_grad(theta, x=X, y=Y)
"""
__version__ = "0.1.0"

from lossc.source import CompileError  # noqa: E402
from lossc.api import LosscWarning, compile, load  # noqa: E402
from lossc.runtime.model import Model  # noqa: E402
from lossc.optim import (LBFGS, SGD, Adam, AdamW, NewtonCG, RMSprop,  # noqa: E402
                         TrainResult, train)

__all__ = ["compile", "load", "CompileError", "LosscWarning", "Model", "train",
           "TrainResult", "SGD", "RMSprop", "Adam", "AdamW", "LBFGS", "NewtonCG",
           "__version__"]
