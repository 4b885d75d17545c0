"""The code units of a model: what is compiled together, and when.

A model's native code comes in units, each its own LLVM module and object file:

    value_and_grad   lossc_value_and_grad        compiled by lossc.compile
    loss             lossc_loss                  compiled on the first loss() call
    train.sgd        lossc_train_steps_sgd       compiled when a run first trains
    train.rmsprop    lossc_train_steps_rmsprop   with that optimizer natively
    train.adam       lossc_train_steps_adam      (Adam and AdamW)
    rng.permutation  lossc_permutation_pcg64     on the first shuffled epoch

LLVM's time grows with the code it is given, and most uses of a model need only part
of it, so `lossc.compile` builds the gradient alone and the rest follows on demand (in
the persistent cache too: a unit compiled later is added to the cached artifact).
Units never call each other directly: the training steps call the gradient through its
exported address, passed in their frame, so each module stands alone.

The training steps and the shuffle do not depend on the model at all (LIBRARY_UNITS):
one object per unit and dtype serves every model, and runtime/library.py compiles it
once per machine, so that the first training run of a new model compiles only its
gradient. A saved model carries a copy of each, like its own units.

`build_module(graph, dtype, units)` puts the requested units into one module: one unit
for compiling, all of them for reading the IR and assembly (`lossc ir`).
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import rng
from lossc.codegen.fused import KINDS, emit_train_steps, function_name
from lossc.codegen.llvm import FunctionCodegen, function_outputs
from lossc.ir.graph import Graph
from lossc.passes import Target, lower_for
from lossc.passes.dce import dce

VALUE_AND_GRAD, LOSS = "value_and_grad", "loss"
PERMUTATION = "rng.permutation"     # the training driver's shuffle (codegen/rng.py)
# the same code for every model (runtime/library.py compiles them once per machine)
LIBRARY_UNITS = tuple(f"train.{k}" for k in KINDS) + (PERMUTATION,)
UNTYPED_UNITS = (PERMUTATION,)      # no real numbers in it: one per machine
UNITS = (VALUE_AND_GRAD, LOSS) + LIBRARY_UNITS
EXPORTS = {VALUE_AND_GRAD: "lossc_value_and_grad", LOSS: "lossc_loss",
           **{f"train.{k}": function_name(k) for k in KINDS}, PERMUTATION: rng.FUNCTION}


def train_unit(optimizer_kind: str) -> str:
    """The unit of one of fused.KINDS."""
    return f"train.{optimizer_kind}"


def build_module(graph: Graph | None, dtype: str = "float64", units=UNITS, triple: str = "",
                 vector_bits: int = 128, plain: bool = False) -> tuple[ir.Module, int]:
    """The LLVM module holding `units` of a graph that has been through the pass
    pipeline up to its target's passes, and the scratch space (elements of `work`) its
    functions need. The target's passes (lower) run here, for `vector_bits` and the
    dtype, unless `plain`: the plain code computes the graph without any fused kernel
    (the lower pass's), which tests compare the fused code with. The graph may be None
    when every unit is one of LIBRARY_UNITS."""
    module = ir.Module(name="lossc_model")
    if triple:
        module.triple = triple
    work = 1
    T = ir.DoubleType() if dtype == "float64" else ir.FloatType()
    for unit in units:
        if unit in (VALUE_AND_GRAD, LOSS):
            want_grad = unit == VALUE_AND_GRAD
            g = graph if plain else lowered(graph, want_grad, Target.of(dtype, vector_bits))
            fc = FunctionCodegen(module, g, dtype, want_grad, EXPORTS[unit], vector_bits)
            fc.generate()
            work = max(work, fc.work_size)
        elif unit == PERMUTATION:
            rng.emit_permutation(module)
        elif unit in LIBRARY_UNITS:
            emit_train_steps(module, unit[6:], T)
        else:
            raise ValueError(f"unknown code unit {unit!r}; the units are {UNITS}")
    return module, work


def lowered(graph: Graph, want_grad: bool, target: Target) -> Graph:
    """The graph of a model function (the loss's outputs, and the gradient's with
    want_grad) through the passes that take a target: lowered for the outputs it
    computes, so that the loss alone takes no fusion made for the gradient (a
    logsumexp's softmax)."""
    own = Graph()
    own.copy_meta_from(graph)
    own.nodes = list(graph.nodes)
    own.outputs = function_outputs(graph, want_grad)
    return lower_for(dce(own), target)
