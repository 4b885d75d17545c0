"""The Python API: lossc.compile and lossc.load."""
from __future__ import annotations

import hashlib
import warnings
from typing import Optional

from lossc import __version__
from lossc.compiler import cache_key, compile_source, read_source
from lossc.runtime import artifact
from lossc.runtime.model import Model
from lossc.runtime.spec import Signature


class LosscWarning(UserWarning):
    """A warning about a `.loss` file (an unused parameter or input)."""


def _model(header: dict, obj: bytes) -> Model:
    from lossc.codegen.jit import NativeCode
    sig = Signature.from_json(header["signature"])
    return Model(sig, header["dtype"], NativeCode(obj), header["work_size"], header, obj)


def _build(source, dims, dtype) -> tuple[dict, bytes]:
    from lossc.codegen.jit import compile_ir, host_cpu
    c = compile_source(source, dims, dtype)
    obj, _ = compile_ir(c.ir)
    header = {
        "format": 1, "abi": artifact.ABI, "lossc_version": __version__, "name": c.source.name,
        "source": c.source.text,
        "source_sha256": hashlib.sha256(c.source.text.encode()).hexdigest(),
        "dims": dict(c.graph.dims), "dims_given": dict(dims or {}), "dtype": dtype,
        "cpu": host_cpu(), "signature": c.signature.to_json(),
        "work_size": c.layout.work_size, "index_checks": c.graph.index_checks,
        "warnings": c.rendered_warnings(), "rewrites": c.graph.rewrites,
        "object_sha256": hashlib.sha256(obj).hexdigest(),
    }
    return header, obj


def compile_graph(graph, dtype: str = "float64") -> Model:
    """A model straight from a graph that has been through the pass pipeline (for tests
    and tools that build graphs themselves; no cache, no source)."""
    from lossc.codegen.jit import compile_ir
    from lossc.compiler import back_end, signature_of
    ir_text, layout = back_end(graph, dtype)
    obj, _ = compile_ir(ir_text)
    header = {"dtype": dtype, "signature": signature_of(graph).to_json(),
              "work_size": layout.work_size, "index_checks": graph.index_checks,
              "warnings": [], "name": "<graph>"}
    return _model(header, obj)


def compile(source, dims: Optional[dict] = None, dtype: str = "float64",
            cache: bool = True) -> Model:
    """Compile a `.loss` file (a path) or source text to a native model.

    dims overrides or supplies `dim` sizes; dtype is "float64" or "float32". With
    `cache`, the machine code is kept in a persistent cache (LOSSC_CACHE_DIR, default
    ~/.cache/lossc) keyed on the source, dims, dtype, lossc version and CPU, so
    compiling the same model again, in any process, is near-instant.
    """
    src = read_source(source)
    dims = {str(k): v for k, v in (dims or {}).items()}
    key = cache_key(src, dims, dtype) if cache else None
    hit = artifact.cache_lookup(key) if cache else None
    if hit is not None:
        header, obj = hit
    else:
        header, obj = _build(src, dims, dtype)
        if cache:
            artifact.cache_store(key, header, obj)
    for w in header["warnings"]:
        warnings.warn(w, LosscWarning, stacklevel=2)
    header = dict(header, name=src.name)
    return _model(header, obj)


def load(path, recompile: bool = True) -> Model:
    """Load a `.lossc` artifact. Machine code made for another CPU or lossc version is
    recompiled from the source embedded in it (recompile=True) or refused."""
    header, obj = artifact.read(path)
    why = artifact.mismatch(header)
    if why is not None:
        if not recompile:
            raise artifact.ArtifactError(f"{path} cannot run here: {why}")
        warnings.warn(f"{path}: {why}; recompiling from the embedded source", LosscWarning)
        header, obj = _build(read_source_text(header), header.get("dims_given"),
                             header["dtype"])
    return _model(header, obj)


def read_source_text(header: dict):
    from lossc.source import Source
    return Source(header["source"], header.get("name", "<artifact>"))
