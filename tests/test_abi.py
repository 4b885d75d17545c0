"""The native calling convention (lossc/codegen/abi.py): every frame declared once, used
by name on both sides, and the ABI version derived from the declarations."""
import ast
import ctypes
import dataclasses
import pathlib

import pytest

from lossc.codegen import abi
from lossc.runtime import artifact

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_layout_declared_in_abi_counts_in_the_version():
    declared = [v for v in vars(abi).values() if isinstance(v, abi.Layout)]
    assert set(map(id, declared)) == set(map(id, abi.LAYOUTS))
    assert abi.version() == abi.VERSION == artifact.ABI


def _changed(layout: abi.Layout, k: int, **change) -> abi.Layout:
    slots = list(layout.slots)
    slots[k] = dataclasses.replace(slots[k], **change)
    return abi.Layout(layout.name, slots, layout.word)


@pytest.mark.parametrize("change", [
    lambda L: _changed(L, 3, name="rows"),
    lambda L: _changed(L, 6, type="i32*"),
    lambda L: _changed(L, 6, meaning=L.slots[6].meaning + ", and the batch"),
    lambda L: abi.Layout(L.name, L.slots[:8], L.word),
    lambda L: abi.Layout(L.name, L.slots[1:2] + L.slots[:1] + L.slots[2:], L.word),
    lambda L: abi.Layout(L.name, L.slots + (abi.Slot("extra", "i64", "more"),), L.word),
])
def test_any_change_of_a_layout_changes_the_version(change):
    layouts = tuple(change(L) if L is abi.VALUE_AND_GRAD else L for L in abi.LAYOUTS)
    assert abi.version(layouts) != abi.VERSION


def test_a_change_of_a_shared_constant_changes_the_version():
    constants = {"return": dict(abi.RETURN_CODES, diverged=4),
                 "optimizer": abi.OPTIMIZER_KINDS}
    assert abi.version(constants=constants) != abi.VERSION
    constants = {"return": abi.RETURN_CODES, "optimizer": {"sgd": 0, "adam": 1, "rmsprop": 2}}
    assert abi.version(constants=constants) != abi.VERSION


def test_an_artifact_of_another_calling_convention_is_not_run():
    assert artifact.mismatch({"abi": 7, "lossc_version": "0.1.0"}).startswith(
        "its calling convention (abi 7) is not this lossc's")


@pytest.mark.parametrize("layout", abi.LAYOUTS, ids=lambda L: L.name)
def test_the_python_side_of_a_layout_is_its_declaration(layout):
    frame = layout.new()
    assert ctypes.sizeof(frame) == 8 * len(layout)
    assert [name for name, _ in type(frame)._fields_] == [s.name for s in layout.slots]
    for k, slot in enumerate(layout.slots):
        assert getattr(type(frame), slot.name).offset == 8 * k
        assert getattr(frame, slot.name) == 0


def test_the_gradient_takes_its_arguments_by_the_frame_s_slot_names():
    """lossc_value_and_grad unpacks its frame into a worker whose parameters are the
    layout's slots, in order and by name."""
    from lossc.codegen.units import VALUE_AND_GRAD, build_module
    from lossc.compiler import compile_source
    c = compile_source("input x\nparam w\nloss = (w * x) ^ 2\n")
    module, _ = build_module(c.graph, "float64", (VALUE_AND_GRAD,))
    worker = module.get_global("lossc_value_and_grad_impl")
    assert [a.name for a in worker.args] == [s.name for s in abi.VALUE_AND_GRAD.slots]


def _frame_indexing(path: pathlib.Path) -> list:
    """Subscripts of a frame or record by a number literal in a Python file: `frame[7]`,
    `self.err[3]`, `f[0], f[4] = ...`."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Subscript):
            continue
        target = node.value
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        index = node.slice
        if (name in ("frame", "f", "err", "cfg", "flags", "words", "buffered")
                and isinstance(index, (ast.Constant, ast.Slice))):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_python_caller_indexes_a_frame_by_number():
    found = [hit for path in sorted((ROOT / "lossc").rglob("*.py"))
             for hit in _frame_indexing(path)]
    assert found == []
