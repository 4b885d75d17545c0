"""The pass pipeline, in the order it runs. `lossc graph --after NAME` shows the graph
after any of them; tests run the verifier between every two.

The passes up to `tidy` make the graph every target starts from (the plain graph);
those after it take a target description (passes/lower.py `Target`: the vector lanes
of the machine code) and run where one is known: code generation runs them for the
width it emits for (codegen/units.py), `lossc graph` for this machine's.

A model's gradient runs PIPELINE (reverse mode). Its directional derivatives and
Hessian-vector products run the same passes with forward mode inserted
(`pipeline(mode)`): "forward" differentiates the loss forward (the jvp), "hvp" the
gradient graph (forward over reverse); `lossc graph --mode` shows either.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

from lossc.ir.graph import Graph
from lossc.ir.verify import verify
from lossc.passes.autodiff import autodiff
from lossc.passes.cse import cse
from lossc.passes.dce import dce
from lossc.passes.fold import fold
from lossc.passes.forward import forward
from lossc.passes.hoist import hoist
from lossc.passes.lower import Target, lower
from lossc.passes.stabilize import stabilize


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable
    description: str
    target: bool = False     # run(graph, target)


PIPELINE = (
    Pass("stabilize", stabilize, "rewrite naive forms (log(1 + exp(z)), ...) into stable ones"),
    Pass("autodiff", autodiff, "reverse mode: add grad.<p> outputs built in the same IR"),
    Pass("fold", fold, "constant folding and identities (x * 1, x + 0, -(-x))"),
    Pass("cse", cse, "merge identical computations (hash-consing)"),
    Pass("dce", dce, "drop nodes no output depends on"),
    Pass("hoist", hoist, "split outputs into per-sample and once-per-call terms"),
    Pass("tidy", lambda g: dce(cse(g)), "merge and drop what hoisting duplicated or left "
                                         "unused (cse, then dce)"),
    Pass("lower", lower, "the fusions code generation takes, as explicit ops (row dots "
                         "and matrix products, outer-product gradients, logsumexp with "
                         "its softmax, shared exponentials)", target=True),
)

PASS_NAMES = ("build",) + tuple(p.name for p in PIPELINE)

MODES = ("reverse", "forward", "hvp")


def pipeline(mode: str = "reverse", directions: int = 1) -> tuple[Pass, ...]:
    """The passes of a mode: reverse (the gradient), forward (the loss and its tangents
    along `directions` directions), hvp (the gradient and its tangents: Hessian-vector
    products)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "reverse":
        return PIPELINE
    fwd = Pass("forward", functools.partial(forward, directions=directions),
               "forward mode: add tangent.<out> outputs along a direction given as "
               "tangent.<p> parameters")
    if mode == "forward":                  # (in place of autodiff)
        return PIPELINE[:1] + (fwd,) + PIPELINE[2:]
    return PIPELINE[:2] + (fwd,) + PIPELINE[2:]


def pass_names(mode: str = "reverse") -> tuple[str, ...]:
    return ("build",) + tuple(p.name for p in pipeline(mode))


def derived_graph(stages: dict, mode: str, directions: int = 1,
                  check: bool = False) -> Graph:
    """The plain graph of a forward or hvp mode from the snapshots of a reverse run
    (run_pipeline's `snapshots`): the passes they share are not run again."""
    passes = pipeline(mode, directions)
    k = next(i for i, p in enumerate(passes) if p.name == "forward")
    return run_pipeline(stages[passes[k - 1].name], check=check, passes=passes[k:])


class PassError(RuntimeError):
    """An internal error inside a pass, relabelled with the pass's name."""


def run_pipeline(graph: Graph, check: bool = False, until: str | None = None,
                 snapshots: dict | None = None, target: Optional[Target] = None,
                 passes: tuple = PIPELINE) -> Graph:
    """Run the passes in order; stop after `until` if given. The passes that take a
    target run only when one is given: without it the result is the plain graph. With
    `snapshots`, store the graph after every pass under its name ("build" is the
    input)."""
    if snapshots is not None:
        snapshots["build"] = graph
    if until == "build":
        return graph
    for p in passes:
        if p.target and target is None:
            break
        graph = _run(p, graph, target, check)
        if snapshots is not None:
            snapshots[p.name] = graph
        if p.name == until:
            break
    return graph


def lower_for(graph: Graph, target: Target, check: bool = False) -> Graph:
    """The passes that take a target, on a plain graph (the result of run_pipeline
    without one)."""
    for p in PIPELINE:
        if p.target:
            graph = _run(p, graph, target, check)
    return graph


def _run(p: Pass, graph: Graph, target, check: bool) -> Graph:
    try:
        graph = p.run(graph, target) if p.target else p.run(graph)
        if check:
            verify(graph)
    except Exception as e:  # relabel, so a failure names its pass
        raise PassError(f"pass '{p.name}' failed: {type(e).__name__}: {e}") from e
    return graph
