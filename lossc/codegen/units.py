"""The code units of a model: what is compiled together, and when.

A model's native code comes in units, each its own LLVM module and object file:

    value_and_grad   lossc_value_and_grad        compiled by lossc.compile
    loss             lossc_loss                  compiled on the first loss() call
    predict          lossc_predict               compiled on the first predict() call
    train.sgd        lossc_train_steps_sgd       compiled when a run first trains
    train.rmsprop    lossc_train_steps_rmsprop   with that optimizer natively
    train.adam       lossc_train_steps_adam      (Adam and AdamW)
    rng.permutation  lossc_permutation_pcg64     on the first shuffled epoch
    lbfgs.two_loop   lossc_lbfgs_two_loop        when a run first trains with LBFGS
    jvp              lossc_jvp                   on the first Model.jvp call
    hvp              lossc_hvp                   on the first Model.hvp call
    hessian          lossc_hessian               on the first Model.hessian call

LLVM's time grows with the code it is given, and most uses of a model need only part
of it, so `lossc.compile` builds the gradient alone and the rest follows on demand (in
the persistent cache too: a unit compiled later is added to the cached artifact).
Units never call each other directly: the training steps call the gradient through its
exported address, passed in their frame, so each module stands alone.

The training steps, the shuffle and L-BFGS's direction do not depend on the model at
all (LIBRARY_UNITS):
one object per unit and dtype serves every model, and runtime/library.py compiles it
once per machine, so that the first training run of a new model compiles only its
gradient. A saved model carries a copy of each, like its own units.

The last three (DERIVED_UNITS) are compiled from graphs of their own, forward mode over
the loss or over the gradient (passes/forward.py), made from the snapshots of the
model's reverse-mode run (`derived_mode`, `result_graph`). They run as the gradient does,
one frame of the same layout, vectorized over the batch, with the directions as more
parameters after the model's own and their results in those parameters' gradient slots.
A saved model holds those of them it has compiled; the others are compiled from its
embedded source when first used.

`build_module(graph, dtype, units)` puts the requested units into one module: one unit
for compiling, all of them for reading the IR and assembly (`lossc ir`).
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import rng, two_loop
from lossc.codegen.fused import emit_train_steps
from lossc.codegen.llvm import FunctionCodegen, function_outputs
from lossc.codegen.predict import PredictCodegen
from lossc.ir.graph import Graph
from lossc.ir.spec import ParamSpec
from lossc.passes import Target, lower_for
from lossc.passes.dce import dce
from lossc.passes.forward import TANGENT

# the units' names and exported functions, in a module the runtime imports without LLVM
from lossc.codegen.unit_names import (DERIVED_UNITS, EXPORTS, HESSIAN, HVP,  # noqa: F401
                                      JVP, LIBRARY_UNITS, LOSS, PERMUTATION, PREDICT,
                                      UNITS,
                                      TWO_LOOP, UNTYPED_UNITS, VALUE_AND_GRAD, train_unit)

# Hessian columns computed per native call: the hessian unit's graph holds this many
# tangents of the gradient (its code grows with it; the calls per Hessian shrink)
HESSIAN_DIRECTIONS = 8


def derived_mode(unit: str, n_params: int) -> tuple[str, int]:
    """(pass pipeline mode, directions) of a derived unit's graph."""
    if unit == JVP:
        return "forward", 1
    if unit == HVP:
        return "hvp", 1
    if unit == HESSIAN:
        return "hvp", hessian_directions(n_params)
    raise ValueError(f"{unit!r} is not a derived unit; those are {DERIVED_UNITS}")


def hessian_directions(n_params: int) -> int:
    return max(1, min(HESSIAN_DIRECTIONS, n_params))


def result_graph(graph: Graph, unit: str) -> Graph:
    """A derived unit's graph (forward or hvp mode, through the whole pipeline) with
    its results where the code generator writes gradients: an output grad.<p> goes to
    parameter p's slots of the gradient buffer. The tangent of grad.p along direction k
    (H v_k restricted to p) goes to the slots of its direction's parameter,
    tangent<k>.p; the jvp's one number, the loss's tangent, to a parameter of its own,
    `tangent.loss` (read by no node), after the direction's. The gradient itself stays
    in the model's parameters' slots. A penalty's parts are `.fixed` outputs like the
    others (added once); the declared outputs (`out.<name>`) are left out."""
    out = Graph()
    out.copy_meta_from(graph)
    out.nodes = graph.nodes
    out.params = list(graph.params)
    outputs = {}
    for name, node in graph.outputs.items():
        base, part = name.rsplit(".", 1)
        if name.startswith("out."):     # (the predict unit's: no derived unit has them)
            continue
        if not base.startswith(TANGENT):
            outputs[name] = node
        elif unit == JVP and base == f"{TANGENT}.loss":
            outputs[f"grad.{base}.{part}"] = node
        elif unit != JVP and ".grad." in base:
            direction, param = base.split(".grad.", 1)
            outputs[f"grad.{direction}.{param}.{part}"] = node
    if unit == JVP:
        n = sum(p.size for p in graph.params)
        out.params.append(ParamSpec(f"{TANGENT}.loss", (), ("const", (0.0,)), n))
    out.outputs = outputs
    return out


def build_module(graph: Graph | None, dtype: str = "float64", units=UNITS, triple: str = "",
                 vector_bits: int = 128, plain: bool = False,
                 derived=None) -> tuple[ir.Module, int]:
    """The LLVM module holding `units` of a graph that has been through the pass
    pipeline up to its target's passes, and the scratch space (elements of `work`) its
    functions need. The target's passes (lower) run here, for `vector_bits` and the
    dtype, unless `plain`: the plain code computes the graph without any fused kernel
    (the lower pass's), which tests compare the fused code with. The graph may be None
    when every unit is one of LIBRARY_UNITS. derived(unit) -> the result_graph of a
    unit of DERIVED_UNITS, plain likewise."""
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
        elif unit == PREDICT:
            own = only_outputs(graph, predictions(graph))
            g = own if plain else lower_for(dce(own), Target.of(dtype, vector_bits))
            pc = PredictCodegen(module, g, dtype, EXPORTS[unit], vector_bits)
            pc.generate()
            work = max(work, pc.work_size)
        elif unit in DERIVED_UNITS:
            if derived is None:
                raise ValueError(f"the code unit {unit!r} is made from the model's "
                                 "source: a model compiled from a graph has none")
            g = derived(unit)
            g = g if plain else lowered(g, True, Target.of(dtype, vector_bits, False))
            fc = FunctionCodegen(module, g, dtype, True, EXPORTS[unit], vector_bits)
            fc.generate()
            work = max(work, fc.work_size)
        elif unit == PERMUTATION:
            rng.emit_permutation(module)
        elif unit == TWO_LOOP:
            two_loop.emit_two_loop(module)
        elif unit in LIBRARY_UNITS:
            emit_train_steps(module, unit[6:], T)
        else:
            raise ValueError(f"unknown code unit {unit!r}; the units are "
                             f"{UNITS + DERIVED_UNITS}")
    return module, work


def lowered(graph: Graph, want_grad: bool, target: Target) -> Graph:
    """The graph of a model function (the loss's outputs, and the gradient's with
    want_grad) through the passes that take a target: lowered for the outputs it
    computes, so that the loss alone takes no fusion made for the gradient (a
    logsumexp's softmax)."""
    own = only_outputs(graph, function_outputs(graph, want_grad))
    return lower_for(dce(own), target)


def only_outputs(graph: Graph, outputs: dict) -> Graph:
    """The graph's nodes with only these outputs."""
    own = Graph()
    own.copy_meta_from(graph)
    own.nodes = list(graph.nodes)
    own.outputs = outputs
    return own


def predictions(graph: Graph) -> dict:
    """The outputs the predict unit computes (`output name = ...`)."""
    return {k: v for k, v in graph.outputs.items() if k.startswith("out.")}
