"""Machine code into the process: an object file in, callable functions out.

Every exported lossc function has the C signature `int32_t f(int64_t *frame)` (the
frame layouts are declared in codegen/abi.py). Objects are loaded by
lossc's own ELF loader (runtime/elf.py), which needs nothing from LLVM: a model from
the persistent cache is ready in a millisecond or two instead of paying for loading
LLVM's 100 MB library. Where that loader does not apply (not Linux on x86-64, or it
cannot map memory or find a C library function) LLVM's MCJIT links the object instead.
The loader "llvm" (Options.loader, LOSSC_LOADER=llvm) forces MCJIT (for comparisons and
debugging).

Either way, an object that calls any function but the few lossc's code generator
emits calls to (codegen/externals.py) is refused with ArtifactError before anything is
linked: lossc's loader resolves no other name, and the object's undefined symbols are
checked before MCJIT sees it (runtime/symbols.py). On Linux x86-64 an object that fails
any of the ELF loader's checks of the file (elf.check: damaged, or holding what lossc's
code generator never makes, such as thread-local data) is an ArtifactError too, in
either mode: MCJIT would abort the process on much of it.
"""
from __future__ import annotations


def load_object(obj: bytes, names: tuple[str, ...], loader: str = "elf"):
    """An object with `addresses` and `functions` (ctypes callables, which release the
    GIL while they run) for each of `names`. Keep it alive while they are used.
    loader: "elf" (lossc's, where it applies) or "llvm" (MCJIT). Raises ArtifactError
    for an object that calls a function lossc's code never calls, or that fails the
    ELF loader's checks."""
    from lossc.runtime.artifact import ArtifactError
    from lossc.runtime import elf
    if elf.supported():
        if loader != "llvm":
            try:
                return elf.ElfCode(obj, names)   # (which resolves the allowed names only)
            except elf.ElfDamagedError as e:
                raise ArtifactError(f"refusing to load machine code: {e}") from None
            except elf.ElfLoadError:
                pass
        # MCJIT aborts the process on much that lossc's loader refuses: it gets only an
        # object that passes all of the loader's checks of the file
        try:
            elf.check(obj, names)
        except elf.ElfLoadError as e:
            raise ArtifactError(f"refusing to load machine code: {e}") from None
    # MCJIT would resolve any name the process knows: the object's are checked first
    from lossc.runtime.symbols import SymbolError, check_externals
    try:
        check_externals(obj)
    except SymbolError as e:
        raise ArtifactError(f"refusing to load machine code: {e}") from None
    from lossc.codegen.jit import NativeCode
    return NativeCode(obj, names)
