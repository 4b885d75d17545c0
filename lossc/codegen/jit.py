"""LLVM IR text -> optimized machine code for this CPU, and loading it into the process.

The TargetMachine is made for the host CPU by name and feature set: without them LLVM
emits baseline SSE2 code and cannot use AVX/AVX-512. Optimization runs the new pass
manager at speed level 3 with loop and SLP vectorization on.

Loading takes an object file (from `emit_object`, or a saved artifact) and links it into
an MCJIT engine: no optimization or code generation happens at load time. Calls to libm
(tanh, log1p, ...) resolve against the process, where the C library is loaded.
"""
from __future__ import annotations

import ctypes
import functools

import llvmlite
import llvmlite.binding as llvm

from lossc.codegen.fused import NAME as TRAIN_STEPS
from lossc.codegen.llvm import FUNCTIONS


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
def target_machine():
    """The shared TargetMachine for optimizing and emitting code."""
    return new_target_machine()


def new_target_machine():
    _init()
    cpu = host_cpu()
    target = llvm.Target.from_triple(cpu["triple"])
    return target.create_target_machine(cpu=cpu["cpu"], features=cpu["features"], opt=3,
                                        reloc="pic", codemodel="default")


def parse(ir_text: str):
    _init()
    mod = llvm.parse_assembly(ir_text)
    mod.verify()
    return mod


def optimize(mod) -> None:
    tm = target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def compile_ir(ir_text: str) -> tuple[bytes, str]:
    """Optimize and compile; returns (object code, optimized IR text)."""
    mod = parse(ir_text)
    optimize(mod)
    return target_machine().emit_object(mod), str(mod)


def assembly(ir_text: str) -> str:
    mod = parse(ir_text)
    optimize(mod)
    return target_machine().emit_assembly(mod)


# i32 f(i64* frame), frame = (params, hypers, inputs, B, value, work, err, grad)
NATIVE_SIGNATURE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
FRAME = ("params", "hypers", "inputs", "B", "value", "work", "err", "grad")


class NativeCode:
    """Machine code linked into this process. Keep it alive while its functions are
    used: the engine owns the memory they live in.

    ctypes releases the GIL during each call, so threads can run them in parallel."""

    def __init__(self, obj: bytes):
        _init()
        empty = llvm.parse_assembly("")
        empty.triple = llvm.get_process_triple()
        # the engine takes ownership of its TargetMachine and frees it with itself:
        # it must get a TargetMachine of its own, never the shared one
        self.engine = llvm.create_mcjit_compiler(empty, new_target_machine())
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.addresses = {name: self.engine.get_function_address(name)
                          for name in FUNCTIONS + (TRAIN_STEPS,)}
        for name, addr in self.addresses.items():
            if not addr:
                raise RuntimeError(f"compiled code has no function {name}")
        self.functions = {name: NATIVE_SIGNATURE(addr) for name, addr in self.addresses.items()}
        # all three take one i64* frame: lossc_train_steps's layout is in codegen/fused.py
