"""lossc's model-independent native code, compiled once per machine.

Some code units are the same for every model (codegen/units.py LIBRARY_UNITS: the
fused training steps of each optimizer, which get the parameter count and the inputs'
row sizes from their frame; and the training driver's shuffle). Compiling one costs
LLVM tens of milliseconds, so each is compiled the first time any model on this
machine needs it, kept in the persistent cache beside the models (one entry per unit
and dtype, keyed like a model's entry on lossc's code and the CPU) and in memory for
the rest of the process (a memo keyed on the unit, dtype and cache folder: nothing in
it changes how lossc behaves). A model compiled with `cache=False` leaves the
persistent cache alone for these too (they are then compiled once per process). A model's
artifact carries a copy of every unit, so a saved model runs anywhere the artifact is
accepted without this cache.

Compile time is paid once per machine, not per model, so these units get LLVM's
full optimization (`jit.LIBRARY_LEVEL`): the optimizer's update loops run over a
parameter count only known at run time, and LLVM's loop vectorizer makes them SIMD.
"""
from __future__ import annotations

import pathlib
from typing import Optional

from lossc.runtime import artifact, forks
from lossc.runtime.keys import key_of
from lossc.version import __version__

_objects: dict[tuple, bytes] = {}       # (unit, dtype, cache folder or None) -> object
_lock = forks.Lock()      # (a forked child gets a free one)


def unit_object(unit: str, dtype: str, folder: Optional[pathlib.Path]) -> bytes:
    """The object file of a library unit for this machine: from memory, from the
    persistent cache in `folder`, or compiled now (and stored in both). folder=None: no
    reading or writing of a persistent cache (a model compiled with cache=False)."""
    from lossc.codegen.unit_names import UNTYPED_UNITS
    if unit in UNTYPED_UNITS:
        dtype = "any"               # (no real numbers in it)
    # (a new cache folder gets its own copy; without one any copy in memory will do)
    key = (unit, dtype, None if folder is None else str(folder))
    obj = _objects.get(key) or (None if folder is not None else next(
        (o for (u, d, _), o in list(_objects.items()) if (u, d) == (unit, dtype)), None))
    if obj is None:
        with _lock:      # two threads asking at once compile it once
            obj = _objects.get(key)
            if obj is None:
                obj = _objects[key] = (_cached_or_compiled(unit, dtype, folder)
                                       if folder is not None else compile_unit(unit, dtype))
    return obj


def cache_key(unit: str, dtype: str) -> str:
    return key_of("library", unit, dtype)


def _cached_or_compiled(unit: str, dtype: str, folder: pathlib.Path) -> bytes:
    key = cache_key(unit, dtype)
    hit = artifact.cache_lookup(folder, key, {"library": unit, "dtype": dtype})
    if hit is not None and unit in hit[1]:
        return hit[1][unit]
    obj = compile_unit(unit, dtype)
    artifact.cache_store(folder, key, _header(unit, dtype), {unit: obj})
    return obj


def compile_unit(unit: str, dtype: str) -> bytes:
    from lossc.codegen.jit import LIBRARY_LEVEL, compile_ir, host_cpu
    from lossc.codegen.units import LIBRARY_UNITS, build_module
    if unit not in LIBRARY_UNITS:
        raise ValueError(f"{unit!r} is not a library unit; those are {LIBRARY_UNITS}")
    module, _ = build_module(None, dtype, (unit,), triple=host_cpu()["triple"])
    return compile_ir(str(module), LIBRARY_LEVEL)


def _header(unit: str, dtype: str) -> dict:
    from lossc.codegen.jit import host_cpu
    return {"format": 3, "abi": artifact.ABI, "lossc_version": __version__,
            "name": f"<lossc library: {unit}>", "library": unit, "dtype": dtype,
            "cpu": host_cpu(), "host": artifact.host_fingerprint(), "work_size": 1}
