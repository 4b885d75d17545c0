"""The functions outside lossc's own code that its machine code calls.

The code generator emits calls to a few C library math functions by name, and LLVM
intrinsics of which some become C library calls when LLVM lowers them: which, the op
table says (each elementwise op's `math`, lossc/ir/ops/base.py `Math`). LLVM's
instruction combining and code generation turn some of those calls into others. The
loaders (runtime/elf.py, and runtime/native.py before MCJIT links anything) resolve
these names and refuse any other: an object file that asks for another function was
not made by lossc's code generator. tests/test_elf.py compiles every sample and
conformance model at every vector width and both dtypes and checks that each external
symbol is in ALLOWED.

No LLVM here: the loaders import this without it.
"""
from __future__ import annotations

from lossc.ir.ops import OPS


def _called(via: str) -> tuple:
    return tuple(sorted({d.math.name for d in OPS.values()
                         if d.math is not None and d.math.via == via}))


# called by name (values.ValueEmitter.math); float32 code calls the "f" versions
LIBM = _called("libm")
# LLVM intrinsics called as llvm.<name>.<type>: some are instructions (sqrt, fabs)...
INSTRUCTIONS = _called("instruction")
# ...and the others become C library calls (sin, sinf, ...), one per lane on vectors
LIBM_INTRINSICS = _called("intrinsic")
INTRINSICS = INSTRUCTIONS + LIBM_INTRINSICS
# what LLVM makes of those: sin and cos of one value become one sincos call;
# instruction combining turns pow(2^k, x) into exp2(k x), and exp2 of an integer into
# ldexp
LOWERED = ("sincos", "exp2", "ldexp")
# llvm.memcpy and llvm.memset (codegen/llvm.py), and the loops
# LLVM's full pipeline (runtime/library.py) recognizes as a copy or a fill
MEMORY = ("memcpy", "memset", "memmove")
# macOS spells two of these its own way: sincos returning its pair in registers,
# and memset with zeros
DARWIN = ("__sincos_stret", "__sincosf_stret", "bzero", "__bzero")

ALLOWED = frozenset(MEMORY + DARWIN) | frozenset(
    name + suffix for name in LIBM + LIBM_INTRINSICS + LOWERED for suffix in ("", "f"))
