"""The Python API: lossc.compile and lossc.load.

A model found in the compile cache (or a verified artifact) is loaded without the
compiler: the front end, the passes and the code generator, and LLVM behind them, are
imported where a model is compiled (`_build`, `_unit_compiler`), so that `import lossc`
and a cache hit cost a few milliseconds (tests/test_startup.py)."""
from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import operator
import warnings
from typing import Optional

from lossc.codegen.unit_names import VALUE_AND_GRAD
from lossc.ir.dtypes import DTYPES
from lossc.options import Options
from lossc.runtime import artifact
from lossc.runtime.code import ModelCode
from lossc.runtime.keys import model_key
from lossc.runtime.model import CallsBeyond, Model
from lossc.runtime.spec import Signature
from lossc.source import read_source
from lossc.version import __version__


class LosscWarning(UserWarning):
    """A warning about a `.loss` file (an unused parameter or input)."""


# compiled by lossc.compile; the other code units on first use (codegen/units.py)
EAGER_UNITS = (VALUE_AND_GRAD,)


def _model(header: dict, objects: dict, compile_unit, options: Options,
           cache_key=None) -> Model:
    sig = Signature.from_json(header["signature"])
    code = ModelCode(header, objects, compile_unit, options, cache_key)
    beyond = CALLS_BEYOND if isinstance(header.get("source"), str) else None
    return Model(sig, header["dtype"], code, header, options, beyond)


def model_from_pickle(state):
    """The model a pickled state describes (lossc.runtime.pickled), compiled here or
    taken from this process's compile cache; a ValueError for a state that is not one
    pickled.state_of made."""
    from lossc.options import LOADERS, VECTOR_BITS
    from lossc.runtime.pickled import FIELDS
    from lossc.source import MAX_SOURCE_BYTES, Source
    if not isinstance(state, dict) or set(state) != set(FIELDS):
        raise ValueError("not the pickled state of a lossc model (its fields are "
                         f"{list(FIELDS)})")
    source, name = state["source"], state["name"]
    if not isinstance(source, str) or len(source.encode("utf-8", "replace")) > \
            MAX_SOURCE_BYTES:
        raise ValueError("a pickled lossc model's source must be text of at most "
                         f"{MAX_SOURCE_BYTES} bytes")
    if not isinstance(name, str):
        raise ValueError("a pickled lossc model's name must be text")
    for what, text in (("source", source), ("name", name)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:     # (a lone surrogate: no file holds one)
            raise ValueError(f"a pickled lossc model's {what} is not valid text: "
                             f"{e.reason} at character {e.start}") from None
    if state["dtype"] not in DTYPES:
        raise ValueError(f"a pickled lossc model's dtype must be one of {DTYPES}, got "
                         f"{state['dtype']!r}")
    bits, loader = state["vector_bits"], state["loader"]
    if bits is not None and bits not in VECTOR_BITS or loader not in LOADERS:
        raise ValueError("a pickled lossc model's vector width or loader is not one "
                         "lossc uses")
    if not isinstance(state["dims"], dict):
        raise ValueError("a pickled lossc model's dims must be a dict")
    dims = normalize_dims(state["dims"])
    # the cache folder and the rest are this process's own
    options = dataclasses.replace(Options.from_env(), vector_bits=bits, loader=loader)
    model = compile(Source(source, name), dims, state["dtype"], options=options)
    return model.set_threads(state["threads"], state["min_samples_per_thread"])


def _collection_value_and_grad(model, theta: dict, kwargs: dict):
    """Model.value_and_grad on inputs among which are dask arrays (lossc.optim, loaded
    when first used)."""
    from lossc.optim.dask_chunks import collection_value_and_grad
    return collection_value_and_grad(model, theta, kwargs)


CALLS_BEYOND = CallsBeyond(rebuild=model_from_pickle,
                           collection_value_and_grad=_collection_value_and_grad)


def _header(c, unit_work: dict, bits: int) -> dict:
    from lossc.codegen.jit import host_cpu
    return {
        "format": 3, "abi": artifact.ABI, "lossc_version": __version__, "name": c.source.name,
        "source": c.source.text,
        "source_sha256": hashlib.sha256(c.source.text.encode()).hexdigest(),
        "dims": dict(c.graph.dims), "dims_given": dict(c.dims), "dtype": c.dtype,
        "cpu": host_cpu(), "host": artifact.host_fingerprint(),
        "vector_bits": bits,
        "signature": c.signature.to_json(), "work_size": max(unit_work.values()),
        "unit_work": dict(unit_work),
        "index_checks": c.graph.index_checks, "warnings": c.rendered_warnings(),
        "rewrites": c.graph.rewrites, "sparse_rows": _sparse_rows(c.graph),
    }


def _sparse_rows(graph) -> dict:
    """The row-sparse parameters the gradient's code gives touched rows for, and the
    rows each sample touches (runtime/sparse.py)."""
    from lossc.passes.lower import row_sparse_params
    return row_sparse_params(graph)


def _unit_compiler(header: dict, compilation=None):
    """compile_unit for ModelCode: the back end for one unit, from the graph of this
    process's compilation or, for a model from the cache or a file, from the source
    embedded in its header (the front end takes milliseconds)."""
    held = [compilation]

    def compile_unit(unit: str) -> tuple[bytes, int]:
        from lossc.codegen.jit import compile_ir
        from lossc.compiler import compile_source
        if held[0] is None:
            held[0] = compile_source(read_source_text(header), header.get("dims_given"),
                                     header["dtype"])
        # the width the model's other units were made with
        ir_text, work = held[0].unit_ir((unit,), header.get("vector_bits"))
        return compile_ir(ir_text), work
    return compile_unit


def _build(src, dims, dtype, options: Options):
    """Compile the units lossc.compile needs now (the gradient); the rest on demand."""
    from lossc.codegen.jit import compile_ir
    from lossc.compiler import compile_source, host_vector_bits
    c = compile_source(src, dims, dtype)
    bits = host_vector_bits(options.vector_bits)
    ir_text, work = c.unit_ir(EAGER_UNITS, bits)
    objects = {EAGER_UNITS[0]: compile_ir(ir_text)}
    return _header(c, {EAGER_UNITS[0]: work}, bits), objects, c


def compile_graph(graph, dtype: str = "float64", options: Optional[Options] = None,
                  plain: bool = False) -> Model:
    """A model straight from a graph that has been through the pass pipeline (for tests
    and tools that build graphs themselves; no cache, no source). options: as for
    lossc.compile (None: from the environment). plain: without the fused kernels of the
    lower pass (tests compare the two)."""
    from lossc.codegen.jit import compile_ir
    from lossc.compiler import back_end, host_vector_bits, signature_of
    options = options_or_env(options)
    bits = host_vector_bits(options.vector_bits)

    def compile_unit(unit):
        ir_text, work = back_end(graph, dtype, (unit,), bits, plain=plain)
        return compile_ir(ir_text), work
    obj, work = compile_unit(EAGER_UNITS[0])
    header = {"dtype": dtype, "signature": signature_of(graph).to_json(),
              "work_size": work, "unit_work": {EAGER_UNITS[0]: work},
              "index_checks": graph.index_checks, "warnings": [], "name": "<graph>",
              "sparse_rows": {} if plain else _sparse_rows(graph)}
    return _model(header, {EAGER_UNITS[0]: obj}, compile_unit, options)


def options_or_env(options: Optional[Options]) -> Options:
    """options, or for None the environment's (Options.from_env); anything else is a
    TypeError naming the argument (an AttributeError deep in the call before)."""
    if options is None:
        return Options.from_env()
    if not isinstance(options, Options):
        raise TypeError(f"options must be a lossc.Options (or None: the environment's), "
                        f"got {type(options).__name__}")
    return options


def normalize_dims(dims: Optional[dict]) -> dict:
    """dims as {name: int}: any integer type (NumPy's too) is taken, a bool or a
    non-integer is a ValueError naming the dim; dims not a mapping, a TypeError."""
    if dims is not None and not isinstance(dims, collections.abc.Mapping):
        raise TypeError(f"dims must be a dict of dim names and sizes ({{'D': 16}}), got "
                        f"{type(dims).__name__}")
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
            cache: bool = True, options: Optional[Options] = None) -> Model:
    """Compile a `.loss` file (a path) or source text to a native model.

    dims overrides or supplies `dim` sizes; dtype is "float64" or "float32" (or
    NumPy's np.float32, np.dtype("float32"), ...). With
    `cache`, the machine code is kept in the persistent cache (options.cache_dir)
    keyed on the source, dims, dtype, vector width, lossc version and CPU, so compiling
    the same model again, in any process, is near-instant. options: the vector width,
    loader and cache folder (lossc.options.Options); None reads them from the
    environment (LOSSC_VECTOR_BITS, LOSSC_LOADER, LOSSC_CACHE_DIR).
    """
    options = options_or_env(options)
    dtype = dtype_name(dtype)
    src = read_source(source)
    dims = normalize_dims(dims)
    cache = cache and options.cache_dir is not None
    key = model_key(src, dims, dtype, options.vector_bits) if cache else None
    hit = (artifact.cache_lookup(options.cache_dir, key, _identity(src.text, dims, dtype))
           if cache else None)
    compilation = None
    if hit is not None:
        header, objects = hit
        header.pop("cache_key")
    else:
        header, objects, compilation = _build(src, dims, dtype, options)
        if cache:
            artifact.cache_store(options.cache_dir, key, header, objects)
    for w in header["warnings"]:
        warnings.warn(w, LosscWarning, stacklevel=2)
    header = dict(header, name=src.name)
    return _model(header, objects, _unit_compiler(header, compilation), options, key)


def dtype_name(dtype) -> str:
    """The name of a dtype lossc compiles for, "float64" or "float32", which NumPy's
    forms of them (np.float32, np.dtype("float32")) also give; anything else is a
    ValueError naming the argument (before the cache key, which takes only a name)."""
    import numpy as np
    name = None
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, np.dtype) or (isinstance(dtype, type)
                                         and issubclass(dtype, np.generic)):
        name = np.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


def _identity(source_text: str, dims: dict, dtype: str) -> dict:
    """What a model's cache entry must record (artifact.IDENTITY) to be used for it."""
    return {"source_sha256": hashlib.sha256(source_text.encode()).hexdigest(),
            "dims_given": dims, "dtype": dtype}


def load(path, recompile: bool = True, trust: bool = False,
         options: Optional[Options] = None) -> Model:
    """Load a `.lossc` artifact.

    Its machine code runs only if the file verifies as made by this user on this
    machine (README.md, "Security"), or if the caller vouches for it with trust=True;
    either way its header must agree with itself (and, trusted, with its embedded
    source compiled again), and the code may call no function but the few lossc's
    code calls. Otherwise, and for code made for another CPU or lossc version, the
    model is recompiled from the source embedded in it (recompile=True, with a
    warning) or refused with ArtifactError. An artifact written by Model.save holds
    every code unit, so it runs without LLVM; one that lacks some (a file copied from
    the compile cache) compiles them from its source when they are first used,
    whatever `recompile` says. options: as for lossc.compile (the key that verifies the
    file is in options.cache_dir; a recompilation takes its vector width)."""
    options = options_or_env(options)
    contents = artifact.read_file(path, artifact.secret(options.cache_dir))
    header, objects = contents.header, contents.objects
    if "signature" not in header:
        what = (f"lossc's own code ({header['library']})" if "library" in header
                else "no model")
        raise artifact.ArtifactError(f"{path} holds {what}, not a model: it has no "
                                     "signature")
    why = _why_not_run(contents, trust)
    compilation = None
    if why is not None:
        if not recompile:
            raise artifact.ArtifactError(f"{path} cannot run here: {why}")
        warnings.warn(f"{path}: {why}; recompiling from the embedded source", LosscWarning,
                      stacklevel=2)
        header, objects, compilation = _build(*_recorded_source(header, path), options)
    else:
        problem = artifact.inconsistency(header, objects)
        if problem is None and not contents.authentic:
            problem, compilation = _disagreement(header, objects, path)
        if problem is not None:
            raise artifact.ArtifactError(f"{path} is a damaged lossc artifact: {problem}")
    return _model(header, objects, _unit_compiler(header, compilation), options)


def _why_not_run(contents, trust: bool) -> Optional[str]:
    """Why an artifact's machine code must not run here, or None."""
    if not contents.current:
        return "it was written by an older lossc (another file layout)"
    why = artifact.mismatch(contents.header)
    if why is None and not (contents.authentic or trust):
        why = ("it was not made on this machine by this user (it does not verify with "
               "this user's key; trust=True runs it)")
    return why


def _recorded_source(header: dict, path) -> tuple:
    """(source, dims, dtype) as an artifact's header records them. The source is
    bounded as a source file is (MAX_SOURCE_BYTES): compiling it is the work a load
    does for the file's author, and the file itself may hold 256 MB."""
    from lossc.source import MAX_SOURCE_BYTES
    source, dims, dtype = header.get("source"), header.get("dims_given"), header.get("dtype")
    try:
        ok = (isinstance(source, str) and len(source.encode()) <= MAX_SOURCE_BYTES
              and dtype in DTYPES and isinstance(dims or {}, dict))
        dims = normalize_dims(dims) if ok else None
    except ValueError:
        ok = False
    if not ok:
        raise artifact.ArtifactError(f"{path} is a damaged lossc artifact (its source, "
                                     "dims or dtype)")
    return read_source_text(header), dims, dtype


def _disagreement(header: dict, objects: dict, path) -> tuple[Optional[str], object]:
    """(what in a trusted artifact's header differs from its embedded source compiled
    again, or None; that compilation). The front end and the planning of the model's
    code units run without LLVM: signature, dims, index checks and each unit's work
    size must be what they give, and the work size the largest of those."""
    from lossc.codegen.units import DERIVED_UNITS, LOSS, build_module
    from lossc.compiler import compile_source
    from lossc.source import CompileError
    try:
        c = compile_source(*_recorded_source(header, path))
    except (CompileError, ValueError) as e:
        return f"its source does not compile: {e}", None
    for field, value in (("signature", c.signature.to_json()), ("dims", dict(c.graph.dims)),
                         ("index_checks", c.graph.index_checks),
                         ("sparse_rows", _sparse_rows(c.graph))):
        # (compared as JSON, as the header holds them: tuples are lists there)
        if json.dumps(header.get(field), sort_keys=True) != json.dumps(value, sort_keys=True):
            return f"its {field} is not its source's", c
    bits = header.get("vector_bits")
    if type(bits) is not int or bits not in (64, 128, 256, 512):
        return "its vector width is not one lossc uses", c
    for unit in sorted({VALUE_AND_GRAD, LOSS, *DERIVED_UNITS} & set(objects)):
        _, work = build_module(c.graph, c.dtype, (unit,), vector_bits=bits,
                               derived=c.unit_graph)
        if header["unit_work"].get(unit) != work:
            return f"the work size of its code unit {unit!r} is not its source's", c
    # (every call allocates work_size elements: no more than its largest unit needs)
    if header["work_size"] != max(header["unit_work"].values(), default=1):
        return "its work size is not its code units' largest", c
    return None, c


def read_source_text(header: dict):
    from lossc.source import Source
    return Source(header["source"], header.get("name", "<artifact>"))
