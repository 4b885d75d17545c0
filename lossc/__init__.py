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
from lossc.optim import SGD, Adam, AdamW, RMSprop, TrainResult, train  # noqa: E402
from lossc.optim.laplace import Laplace, LaplaceError, laplace  # noqa: E402

__all__ = ["compile", "load", "CompileError", "LosscWarning", "Model", "train",
           "TrainResult", "SGD", "RMSprop", "Adam", "AdamW", "laplace", "Laplace",
           "LaplaceError", "__version__"]
