"""The Python API: lossc.compile and lossc.load."""
from __future__ import annotations

import hashlib
import operator
import warnings
from typing import Optional

from lossc import __version__
from lossc.compiler import cache_key, compile_source, read_source
from lossc.codegen.units import VALUE_AND_GRAD
from lossc.runtime import artifact
from lossc.runtime.code import ModelCode
from lossc.runtime.model import Model
from lossc.runtime.spec import Signature


class LosscWarning(UserWarning):
    """A warning about a `.loss` file (an unused parameter or input)."""


# compiled by lossc.compile; the other code units on first use (codegen/units.py)
EAGER_UNITS = (VALUE_AND_GRAD,)


def _model(header: dict, objects: dict, compile_unit, cache_key=None) -> Model:
    sig = Signature.from_json(header["signature"])
    code = ModelCode(header, objects, compile_unit, cache_key)
    return Model(sig, header["dtype"], code, header)


def _header(c, objects_work: int) -> dict:
    from lossc.codegen.jit import host_cpu
    from lossc.compiler import vector_bits
    return {
        "format": 2, "abi": artifact.ABI, "lossc_version": __version__, "name": c.source.name,
        "source": c.source.text,
        "source_sha256": hashlib.sha256(c.source.text.encode()).hexdigest(),
        "dims": dict(c.graph.dims), "dims_given": dict(c.dims), "dtype": c.dtype,
        "cpu": host_cpu(), "host": artifact.host_fingerprint(),
        "vector_bits": vector_bits(host_cpu()["features"]),
        "signature": c.signature.to_json(), "work_size": objects_work,
        "index_checks": c.graph.index_checks, "warnings": c.rendered_warnings(),
        "rewrites": c.graph.rewrites,
    }


def _unit_compiler(header: dict, compilation=None):
    """compile_unit for ModelCode: the back end for one unit, from the graph of this
    process's compilation or, for a model from the cache or a file, from the source
    embedded in its header (the front end takes milliseconds)."""
    held = [compilation]

    def compile_unit(unit: str) -> tuple[bytes, int]:
        from lossc.codegen.jit import compile_ir
        if held[0] is None:
            held[0] = compile_source(read_source_text(header), header.get("dims_given"),
                                     header["dtype"])
        # the width the model's other units were made with (LOSSC_VECTOR_BITS may
        # have changed since)
        ir_text, work = held[0].unit_ir((unit,), header.get("vector_bits"))
        return compile_ir(ir_text), work
    return compile_unit


def _build(src, dims, dtype):
    """Compile the units lossc.compile needs now (the gradient); the rest on demand."""
    from lossc.codegen.jit import compile_ir
    c = compile_source(src, dims, dtype)
    ir_text, work = c.unit_ir(EAGER_UNITS)
    objects = {EAGER_UNITS[0]: compile_ir(ir_text)}
    return _header(c, work), objects, c


def compile_graph(graph, dtype: str = "float64") -> Model:
    """A model straight from a graph that has been through the pass pipeline (for tests
    and tools that build graphs themselves; no cache, no source)."""
    from lossc.codegen.jit import compile_ir
    from lossc.compiler import back_end, signature_of

    def compile_unit(unit):
        ir_text, work = back_end(graph, dtype, (unit,))
        return compile_ir(ir_text), work
    obj, work = compile_unit(EAGER_UNITS[0])
    header = {"dtype": dtype, "signature": signature_of(graph).to_json(),
              "work_size": work, "index_checks": graph.index_checks,
              "warnings": [], "name": "<graph>"}
    return _model(header, {EAGER_UNITS[0]: obj}, compile_unit)


def normalize_dims(dims: Optional[dict]) -> dict:
    """dims as {name: int}: any integer type (NumPy's too) is taken, a bool or a
    non-integer is a ValueError naming the dim."""
    out = {}
    for name, value in (dims or {}).items():
        if isinstance(value, bool):
            raise ValueError(f"dim {name!r} must be an integer, got {value!r}")
        try:
            out[str(name)] = operator.index(value)
        except TypeError:
            raise ValueError(f"dim {name!r} must be an integer, got {value!r}") from None
    return out


def compile(source, dims: Optional[dict] = None, dtype: str = "float64",
            cache: bool = True) -> Model:
    """Compile a `.loss` file (a path) or source text to a native model.

    dims overrides or supplies `dim` sizes; dtype is "float64" or "float32". With
    `cache`, the machine code is kept in a persistent cache (LOSSC_CACHE_DIR, default
    ~/.cache/lossc) keyed on the source, dims, dtype, lossc version and CPU, so
    compiling the same model again, in any process, is near-instant.
    """
    src = read_source(source)
    dims = normalize_dims(dims)
    key = cache_key(src, dims, dtype) if cache else None
    hit = artifact.cache_lookup(key) if cache else None
    compilation = None
    if hit is not None:
        header, objects = hit
    else:
        header, objects, compilation = _build(src, dims, dtype)
        if cache:
            artifact.cache_store(key, header, objects)
    for w in header["warnings"]:
        warnings.warn(w, LosscWarning, stacklevel=2)
    header = dict(header, name=src.name)
    return _model(header, objects, _unit_compiler(header, compilation), key)


def load(path, recompile: bool = True) -> Model:
    """Load a `.lossc` artifact. Machine code made for another CPU or lossc version is
    recompiled from the source embedded in it (recompile=True) or refused. An artifact
    written by Model.save holds every code unit, so it runs without LLVM; one that
    lacks some (a file copied from the compile cache) compiles them from its source
    when they are first used, whatever `recompile` says."""
    header, objects = artifact.read(path)
    why = artifact.mismatch(header)
    compilation = None
    if why is not None:
        if not recompile:
            raise artifact.ArtifactError(f"{path} cannot run here: {why}")
        warnings.warn(f"{path}: {why}; recompiling from the embedded source", LosscWarning)
        header, objects, compilation = _build(read_source_text(header),
                                              header.get("dims_given"), header["dtype"])
    return _model(header, objects, _unit_compiler(header, compilation))


def read_source_text(header: dict):
    from lossc.source import Source
    return Source(header["source"], header.get("name", "<artifact>"))
