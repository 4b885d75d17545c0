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
from lossc.runtime.sparse import SparseRows

# the training and Laplace names, from lossc.optim when first used: a program that
# compiles and calls models need not import the training driver (nor the code
# generator and LLVM behind its fused steps)
_LAZY = {**{name: "lossc.optim" for name in ("train", "TrainResult", "SGD", "RMSprop",
                                              "Adam", "AdamW", "LBFGS", "NewtonCG",
                                              "save_params", "load_params")},
         **{name: "lossc.optim.laplace" for name in ("laplace", "Laplace", "LaplaceError")}}

__all__ = ["compile", "load", "Options", "CompileError", "LosscWarning", "Model",
           "SparseRows", *_LAZY, "__version__"]


# lossc.optim itself too (docs/training.md calls lossc.optim.l1_weights, by_name and
# metric after a plain `import lossc`), imported on first use as the names above
_LAZY_MODULES = ("optim",)


def __getattr__(name: str):
    import importlib
    if name in _LAZY_MODULES:
        return importlib.import_module(f"lossc.{name}")     # (which sets the attribute)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value          # (looked up here once)
        return value
    raise AttributeError(f"module 'lossc' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
