"""A model's machine code, one code unit at a time (codegen/units.py).

`ModelCode` holds the object files compiled so far and the functions loaded from them.
Asking for a unit that is not there yet compiles it (`compile_unit`, given by
lossc.api, runs the back end for that unit alone), loads it, and, for a model from the
persistent cache, adds it to the cached artifact so the next process finds it too.
The units every model shares (the training steps, the shuffle) come from
runtime/library.py.
"""
from __future__ import annotations

from typing import Callable, Optional

from lossc.codegen.unit_names import DERIVED_UNITS, EXPORTS, LIBRARY_UNITS, UNITS
from lossc.options import Options
from lossc.runtime import forks, library
from lossc.runtime.native import load_object


class ModelCode:
    def __init__(self, header: dict, objects: dict[str, bytes],
                 compile_unit: Callable[[str], tuple[bytes, int]],
                 options: Options, cache_key: Optional[str] = None):
        """compile_unit(unit) -> (object file, work size) for the units not in
        `objects`; options: the loader and the cache folder; cache_key: the entry of
        the cache folder to add them to, if any."""
        self.header = header
        self.objects = dict(objects)
        self.work_size = int(header["work_size"])
        self.options = options
        self._compile_unit = compile_unit
        self._cache_key = cache_key
        self._loaded = {}
        self._lock = forks.Lock()      # (a forked child gets a free one)

    def function(self, unit: str):
        """The ctypes function exported by `unit`, compiled first if need be."""
        return self._unit(unit).functions[EXPORTS[unit]]

    def address(self, unit: str) -> int:
        return self._unit(unit).addresses[EXPORTS[unit]]

    def complete(self) -> dict[str, bytes]:
        """Every unit's object file, compiling the missing ones (for a saved artifact
        that never needs LLVM), and those of DERIVED_UNITS compiled so far."""
        out = {unit: self._object(unit) for unit in UNITS}
        out.update({unit: self.objects[unit] for unit in DERIVED_UNITS if unit in self.objects})
        return out

    def _unit(self, unit: str):
        code = self._loaded.get(unit)
        if code is None:
            with self._lock:      # two threads asking at once compile it once
                code = self._loaded.get(unit)
                if code is None:
                    code = self._loaded[unit] = load_object(
                        self._object(unit), (EXPORTS[unit],), self.options.loader)
        return code

    def _object(self, unit: str) -> bytes:
        obj = self.objects.get(unit)
        if obj is not None:
            return obj
        if unit not in UNITS and unit not in DERIVED_UNITS:
            raise ValueError(f"unknown code unit {unit!r}")
        if unit in LIBRARY_UNITS:
            # the same for every model: compiled once per machine, with its own cache
            # entry (so not added to `objects`, which go to the model's entry)
            return library.unit_object(unit, self.header["dtype"], self._cache_folder())
        obj, work = self._compile_unit(unit)
        self._add(unit, obj, work)
        if self._cache_key is not None:
            self._store_in_cache()
        return obj

    def _cache_folder(self):
        """The cache folder this model's code is kept in: None unless the model came
        from (or went into) the compile cache."""
        return self.options.cache_dir if self._cache_key is not None else None

    def _add(self, unit: str, obj: bytes, work: int) -> None:
        """A unit's object file, and the scratch space its functions need (recorded
        per unit, so that a loaded artifact's work size can be checked)."""
        self.objects[unit] = obj
        self.header.setdefault("unit_work", {})[unit] = work
        if work > self.work_size:
            self.work_size = work
            self.header["work_size"] = work

    def _store_in_cache(self) -> None:
        """Write the cached entry with this unit added, keeping the units another
        process may have added since this one read it."""
        from lossc.runtime import artifact
        identity = {k: self.header[k] for k in artifact.IDENTITY}
        folder = self._cache_folder()
        there = artifact.cache_lookup(folder, self._cache_key, identity)
        if there is not None:
            header, objects = there
            for unit, obj in objects.items():
                if unit not in self.objects:
                    self._add(unit, obj, header.get("unit_work", {}).get(unit, 1))
        artifact.cache_store(folder, self._cache_key, self.header, self.objects)
