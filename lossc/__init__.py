"""lossc: a compiler from loss functions written as math to native loss-and-gradient code.

    import lossc
    m = lossc.compile("model.loss", dims={"D": 32})
    theta = m.init_params(seed=0)
    value, grads = m.value_and_grad(theta, x=X, y=Y)
"""
from lossc.version import __version__

# every name from its module when first used: `import lossc` itself loads nothing but
# this file (the command line starts with it, and takes a Ctrl-C from then on:
# lossc/__main__.py); a program that compiles and calls models need not import the
# training driver (nor the code generator and LLVM behind its fused steps)
_LAZY = {"CompileError": "lossc.source",
         **{name: "lossc.api" for name in ("LosscWarning", "compile", "load")},
         "Options": "lossc.options", "Model": "lossc.runtime.model",
         "SparseRows": "lossc.runtime.sparse",
         **{name: "lossc.optim" for name in ("train", "TrainResult", "SGD", "RMSprop",
                                              "Adam", "AdamW", "LBFGS", "NewtonCG",
                                              "save_params", "load_params")},
         **{name: "lossc.optim.laplace" for name in ("laplace", "Laplace", "LaplaceError")}}

__all__ = [*_LAZY, "__version__"]


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
