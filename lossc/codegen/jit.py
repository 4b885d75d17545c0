"""LLVM IR text -> optimized machine code for this CPU, and loading it into the process.

The TargetMachine is made for the host CPU by name and feature set: without them LLVM
emits baseline SSE2 code and cannot use AVX/AVX-512.

Optimization runs three passes (PASSES), then instruction selection at -O2. lossc's
code generator already spreads samples across vector lanes, unrolls what pays to
unroll and computes the once-per-call values before the sample loop, so LLVM's job is
cleaning up:
promoting accumulators and tiles from stack slots to registers (SROA), combining
instructions, folding the control flow. Over the benchmark models the O1 pipeline ran
no faster and took 35-40% more compile time (its inliner, three InstCombines, GVN and
loop passes), and O3 with unrolling and LLVM's vectorizers up to 2.5x more. Code that
is compiled once per machine (runtime/library.py) gets O3 with the vectorizers
(LIBRARY_LEVEL): its loops run over sizes known only at run time.

A function of more than HUGE_FUNCTION_LINES lines of IR (thousands of straight-line
values: an array literal of thousands of elements, a tower of thousands of powers)
gets instruction selection at -O0 (FAST_CODEGEN_LEVEL): LLVM's -O2 instruction
selection and register allocation take time superlinear in such code (minutes at
four times the threshold, docs/codegen.md), -O0's about linear; the code is slower,
but it exists.

`NativeCode` links an object file into an MCJIT engine, for when runtime/elf.py cannot
(another architecture): no optimization or code generation happens at load time. Calls
to libm (tanh, log1p, ...) resolve against the process, where the C library is loaded.
"""
from __future__ import annotations

import functools

import llvmlite
import llvmlite.binding as llvm

from lossc.codegen.abi import NATIVE_SIGNATURE

SPEED_LEVEL = 1      # a model's code: PASSES (see the module docstring)
PASSES = ("add_sroa_pass", "add_instruction_combine_pass", "add_simplify_cfg_pass")
CODEGEN_LEVEL = 2    # instruction selection and scheduling ...
FAST_CODEGEN_LEVEL = 0   # ... for a module with a function of more lines of IR than
HUGE_FUNCTION_LINES = 20_000   # this (see the module docstring)
LIBRARY_LEVEL = 3    # for code compiled once per machine (runtime/library.py): all of
                     # LLVM's optimizations, vectorizers included


@functools.lru_cache(maxsize=None)
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def host_cpu() -> dict:
    """What the machine code is made for; recorded in artifacts and cache keys."""
    _init()
    return {"triple": llvm.get_process_triple(), "cpu": llvm.get_host_cpu_name(),
            "features": llvm.get_host_cpu_features().flatten(),
            "llvm": ".".join(map(str, llvm.llvm_version_info)),
            "llvmlite": llvmlite.__version__}


@functools.lru_cache(maxsize=None)
def target_machine(level: int = CODEGEN_LEVEL):
    """The shared TargetMachine for optimizing and emitting code (at `level`)."""
    return new_target_machine(level)


def new_target_machine(level: int = CODEGEN_LEVEL):
    _init()
    cpu = host_cpu()
    target = llvm.Target.from_triple(cpu["triple"])
    return target.create_target_machine(cpu=cpu["cpu"], features=cpu["features"],
                                        opt=level, reloc="pic", codemodel="default")


def codegen_machine(ir_text: str):
    """The TargetMachine that emits this IR: FAST_CODEGEN_LEVEL's if a function in it
    has more than HUGE_FUNCTION_LINES lines (before optimization, which only shrinks
    them), else CODEGEN_LEVEL's."""
    longest = max((f.count("\n") for f in ir_text.split("\ndefine ")[1:]), default=0)
    return target_machine(FAST_CODEGEN_LEVEL if longest > HUGE_FUNCTION_LINES
                          else CODEGEN_LEVEL)


def parse(ir_text: str):
    _init()
    mod = llvm.parse_assembly(ir_text)
    mod.verify()
    return mod


def optimize(mod, level: int = SPEED_LEVEL) -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = pto.slp_vectorization = level == LIBRARY_LEVEL
    pb = llvm.create_pass_builder(target_machine(), pto)
    if level == LIBRARY_LEVEL:
        pb.getModulePassManager().run(mod, pb)
        return
    pm = llvm.create_new_module_pass_manager()
    for add in PASSES:
        getattr(pm, add)()
    pm.run(mod, pb)


def compile_ir(ir_text: str, level: int = SPEED_LEVEL) -> bytes:
    """Optimize (the pipeline of `level`) and compile to an object file."""
    mod = parse(ir_text)
    optimize(mod, level)
    return codegen_machine(ir_text).emit_object(mod)


def optimized_ir(ir_text: str, level: int = SPEED_LEVEL) -> str:
    mod = parse(ir_text)
    optimize(mod, level)
    return str(mod)


def assembly(ir_text: str, level: int = SPEED_LEVEL) -> str:
    mod = parse(ir_text)
    optimize(mod, level)
    return codegen_machine(ir_text).emit_assembly(mod)


class NativeCode:
    """An object file linked into this process by LLVM's MCJIT (the fallback when
    runtime/elf.py cannot load it). Keep it alive while its functions are used: the
    engine owns the memory they live in."""

    def __init__(self, obj: bytes, names: tuple[str, ...]):
        _init()
        empty = llvm.parse_assembly("")
        empty.triple = llvm.get_process_triple()
        # the engine takes ownership of its TargetMachine and frees it with itself:
        # it must get a TargetMachine of its own, never the shared one
        self.engine = llvm.create_mcjit_compiler(empty, new_target_machine())
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.addresses = {name: self.engine.get_function_address(name) for name in names}
        for name, addr in self.addresses.items():
            if not addr:
                raise RuntimeError(f"compiled code has no function {name}")
        self.functions = {name: NATIVE_SIGNATURE(addr) for name, addr in self.addresses.items()}
