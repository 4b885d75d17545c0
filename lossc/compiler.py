"""The compiler driver: source text -> checked graph -> passes -> LLVM IR -> machine code.

Each stage is a function so the CLI can stop after any of them and show its result.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lossc.codegen.units import UNITS, build_module, derived_mode, result_graph
from lossc.ir.build import FUNCTIONS, build_graph
from lossc.ir.dtypes import DTYPES
from lossc.ir.graph import Graph
from lossc.passes import Target, derived_graph, pipeline, run_pipeline
from lossc.runtime.spec import Signature
from lossc.source import (MAX_SOURCE_BYTES, CompileError, Diagnostic,  # noqa: F401
                          Reporter, Source, decode_source, read_source, read_source_file)
from lossc.syntax import parse


def front_end(source: Source, dims: Optional[dict] = None) -> tuple[Graph, list[Diagnostic]]:
    """Parse and check; returns the built graph and the warnings. Raises CompileError."""
    reporter = Reporter(source)
    module = parse(source, reporter, FUNCTIONS)
    declared = [s.name for s in module.statements if type(s).__name__ == "DimDecl"]
    for k in (dims or {}):
        if k not in declared:
            raise ValueError(f"dim {k!r} is not declared in {source.name}; its dims are "
                             f"{declared}")
    graph = build_graph(module, reporter, dims)
    reporter.raise_if_errors()
    return graph, reporter.warnings


def check_declared_values(graph: Graph, source: Source, dtype: str) -> None:
    """Parameters' initial values (their initializers' arguments) and hypers' defaults
    are numbers of the model's dtype: in float32, 1e39 would be inf, which load_params
    refuses in a parameter file. A CompileError at the declaration's name."""
    def beyond(v: float) -> bool:
        with np.errstate(over="ignore"):
            return bool(np.isinf(np.array(v, dtype)))
    spans = {(n.op, n.attr("name")): n.span for n in graph.nodes if n.op in ("param", "hyper")}
    declared = [("param", p.name, p.init[1]) for p in graph.params] + [
        ("hyper", h.name, h.default if isinstance(h.default, tuple) else (h.default,))
        for h in graph.hypers]
    errors = []
    for kind, name, values in declared:
        overflowing = [v for v in values if beyond(v)]
        if overflowing:
            errors.append(Diagnostic(
                "error", f"{kind} '{name}' is declared with {overflowing[0]!r}, which is "
                f"inf in {dtype} (the model's dtype, whose largest number is "
                f"{float(np.finfo(dtype).max)!r})", spans[kind, name]))
    if errors:
        raise CompileError(errors, source)


def signature_of(graph: Graph) -> Signature:
    penalty = "penalty" in graph.outputs or "loss.fixed" in graph.outputs
    return Signature(tuple(graph.params), tuple(graph.inputs), tuple(graph.hypers),
                     graph.reduce, dict(graph.dims), penalty, output_specs(graph))


def output_specs(graph: Graph) -> tuple:
    """The `output` declarations in order: name, shape, the inputs each depends on."""
    from lossc.ir.spec import OutputSpec
    specs = []
    for key, node in graph.outputs.items():
        if key.startswith("out."):
            reach = graph.reachable([node])
            used = {n.attr("name") for n in graph.nodes if n.op == "input" and n.id in reach}
            specs.append(OutputSpec(key[4:], node.shape,
                                    tuple(i.name for i in graph.inputs if i.name in used)))
    return tuple(specs)


def vector_bits(features: str, forced: Optional[int] = None) -> int:
    """The SIMD width to spread samples over: `forced` if given (Options.vector_bits,
    for tests and comparisons; 64 turns lanes off), else by the CPU's features: AVX-512,
    AVX, or SSE2's 128 bits."""
    if forced is not None:
        return forced
    flags = set(features.split(","))
    if "+avx512f" in flags:
        return 512
    if "+avx" in flags:
        return 256
    return 128


def back_end(graph: Graph, dtype: str, units=UNITS, bits: Optional[int] = None,
             plain: bool = False, derived=None) -> tuple[str, int]:
    """The optimized graph's code units as LLVM IR text (before LLVM's own passes), and
    the scratch space their functions need. bits: the SIMD width (default: this CPU's
    widest, see vector_bits); the units of one model must all use the same. plain:
    without the lower pass's fused kernels (codegen/units.py build_module). derived: as
    build_module's."""
    from lossc.codegen.jit import host_cpu
    cpu = host_cpu()
    module, work = build_module(graph, dtype, units, triple=cpu["triple"],
                                vector_bits=vector_bits(cpu["features"], bits),
                                plain=plain, derived=derived)
    return str(module), work


def host_vector_bits(forced: Optional[int] = None) -> int:
    """vector_bits for this machine's CPU."""
    from lossc.codegen.jit import host_cpu
    return vector_bits(host_cpu()["features"], forced)


def host_target(dtype: str, forced_bits: Optional[int] = None) -> Target:
    """The target the passes after tidy prepare the graph for on this machine (its
    vector width, or the one Options.vector_bits forces)."""
    return Target.of(dtype, host_vector_bits(forced_bits))


@dataclass
class Compilation:
    """Everything one compilation produced, stage by stage."""

    source: Source
    dims: dict
    dtype: str
    warnings: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)     # pass name -> graph
    graph: Optional[Graph] = None                  # after the pipeline (see compile_source)
    derived: dict = field(default_factory=dict)    # unit -> its graph (unit_graph)

    @property
    def signature(self) -> Signature:
        return signature_of(self.graph)

    def unit_ir(self, units=UNITS, bits: Optional[int] = None,
                plain: bool = False) -> tuple[str, int]:
        """LLVM IR text for some code units (codegen/units.py) and their work size."""
        return back_end(self.graph, self.dtype, units, bits, plain,
                        derived=self.unit_graph)

    def unit_graph(self, unit: str) -> Graph:
        """The plain graph of one of codegen/units.py's DERIVED_UNITS (forward mode over
        the loss or the gradient), from this compilation's snapshots."""
        if unit not in self.derived:
            mode, directions = derived_mode(unit, self.signature.n_params)
            self.derived[unit] = result_graph(
                derived_graph(self.stages, mode, directions), unit)
        return self.derived[unit]

    @functools.cached_property
    def ir(self) -> str:
        """The LLVM IR of every code unit, for reading."""
        return self.unit_ir()[0]

    def rendered_warnings(self) -> list[str]:
        return [w.render(self.source) for w in self.warnings]


def compile_source(src, dims: Optional[dict] = None, dtype: str = "float64",
                   until: Optional[str] = None, check: bool = False,
                   target: Optional[Target] = None,
                   mode: str = "reverse") -> Compilation:
    """Front end and passes; LLVM IR on request (`unit_ir`, `ir`). The passes that take
    a target (lower) run only with one: code generation runs them itself, for the
    vector width it is asked for. mode: the pass pipeline's (passes.pipeline): the
    model's code is made from a reverse run; forward and hvp runs are for reading
    their graphs."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    source = read_source(src)
    graph, warnings = front_end(source, dims)
    check_declared_values(graph, source, dtype)
    c = Compilation(source, dict(dims or {}), dtype, warnings)
    c.graph = run_pipeline(graph, check=check, until=until, snapshots=c.stages,
                           target=target, passes=pipeline(mode))
    return c
