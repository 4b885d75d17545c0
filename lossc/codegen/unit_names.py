"""The code units' names and the function each exports (codegen/units.py has what each
unit holds and builds them).

Standard library only at import, like abi.py: the runtime finds a cached model's
functions by these names without importing the code generator or LLVM, which is most
of what `import lossc` would otherwise cost (README.md, "How lossc is built").
"""
from __future__ import annotations

from lossc.codegen.abi import OPTIMIZER_KINDS

VALUE_AND_GRAD, LOSS = "value_and_grad", "loss"
PREDICT = "predict"                 # the outputs (codegen/predict.py), on first use
PERMUTATION = "rng.permutation"     # the training driver's shuffle (codegen/rng.py)
TWO_LOOP = "lbfgs.two_loop"         # L-BFGS's direction (codegen/two_loop.py)


def train_unit(optimizer_kind: str) -> str:
    """The unit of one of fused.KINDS."""
    return f"train.{optimizer_kind}"


def train_function(optimizer_kind: str) -> str:
    """The function the unit of one of fused.KINDS exports."""
    return f"lossc_train_steps_{optimizer_kind}"


# the same code for every model (runtime/library.py compiles them once per machine)
LIBRARY_UNITS = tuple(train_unit(k) for k in OPTIMIZER_KINDS) + (PERMUTATION, TWO_LOOP)
# one per machine: no real numbers in it (the shuffle), or doubles whatever the model's
# dtype (L-BFGS works in float64)
UNTYPED_UNITS = (PERMUTATION, TWO_LOOP)
UNITS = (VALUE_AND_GRAD, LOSS, PREDICT) + LIBRARY_UNITS
# forward mode over the loss, and over the gradient (codegen/units.py derived_mode)
JVP, HVP, HESSIAN = "jvp", "hvp", "hessian"
DERIVED_UNITS = (JVP, HVP, HESSIAN)
EXPORTS = {VALUE_AND_GRAD: "lossc_value_and_grad", LOSS: "lossc_loss",
           PREDICT: "lossc_predict",
           **{train_unit(k): train_function(k) for k in OPTIMIZER_KINDS},
           PERMUTATION: "lossc_permutation_pcg64", TWO_LOOP: "lossc_lbfgs_two_loop",
           JVP: "lossc_jvp", HVP: "lossc_hvp", HESSIAN: "lossc_hessian"}
