"""The pass pipeline, in the order it runs. `lossc graph --after NAME` shows the graph
after any of them; tests run the verifier between every two."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lossc.ir.graph import Graph
from lossc.ir.verify import verify
from lossc.passes.autodiff import autodiff
from lossc.passes.cse import cse
from lossc.passes.dce import dce
from lossc.passes.fold import fold
from lossc.passes.hoist import hoist
from lossc.passes.stabilize import stabilize


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], Graph]
    description: str


PIPELINE = (
    Pass("stabilize", stabilize, "rewrite naive forms (log(1 + exp(z)), ...) into stable ones"),
    Pass("autodiff", autodiff, "reverse mode: add grad.<p> outputs built in the same IR"),
    Pass("fold", fold, "constant folding and identities (x * 1, x + 0, -(-x))"),
    Pass("cse", cse, "merge identical computations (hash-consing)"),
    Pass("dce", dce, "drop nodes no output depends on"),
    Pass("hoist", hoist, "split outputs into per-sample and once-per-call terms"),
    Pass("tidy", lambda g: dce(cse(g)), "merge and drop what hoisting duplicated or left "
                                         "unused (cse, then dce)"),
)

PASS_NAMES = ("build",) + tuple(p.name for p in PIPELINE)


class PassError(RuntimeError):
    """An internal error inside a pass, relabelled with the pass's name."""


def run_pipeline(graph: Graph, check: bool = False, until: str | None = None,
                 snapshots: dict | None = None) -> Graph:
    """Run the passes in order; stop after `until` if given. With `snapshots`, store the
    graph after every pass under its name ("build" is the input)."""
    if snapshots is not None:
        snapshots["build"] = graph
    if until == "build":
        return graph
    for p in PIPELINE:
        try:
            graph = p.run(graph)
            if check:
                verify(graph)
        except Exception as e:  # relabel, so a failure names its pass
            raise PassError(f"pass '{p.name}' failed: {type(e).__name__}: {e}") from e
        if snapshots is not None:
            snapshots[p.name] = graph
        if p.name == until:
            break
    return graph
