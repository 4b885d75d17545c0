"""What an estimator needs to know of a `.loss` model before compiling it: its
hyperparameters (the estimator's parameters by their own names), its dims and the
sizes its inputs declare (so that the dims sizing the data are set from the data).

Read by the parser alone (no graph, no code generation), once per source text."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from lossc.source import Reporter, Source, read_source
from lossc.syntax import ast, parse

Size = Union[int, str]      # an integer literal, or the name of a dim


@dataclass(frozen=True)
class Declarations:
    dims: tuple[str, ...]                            # in declaration order
    inputs: dict                                     # name -> (sizes, is_int)
    hypers: dict                                     # name -> default (float or array)
    unsized: tuple[str, ...] = ()                    # the dims the file gives no size


def source_of(model) -> Source:
    """A model given as a `.loss` path or source text, read (lossc.compile's rule)."""
    if not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
        raise TypeError(f"model must be a .loss path or source text, got "
                        f"{type(model).__name__}")
    return read_source(model)


def declarations(source: Source) -> Declarations:
    """The declarations of `source`; a CompileError (file:line:col, the line, a caret)
    if it does not parse."""
    return _declarations(source.text, source.name)


@functools.lru_cache(maxsize=64)
def _declarations(text: str, name: str) -> Declarations:
    from lossc.ir.build import FUNCTIONS
    source = Source(text, name)
    reporter = Reporter(source)
    module = parse(source, reporter, FUNCTIONS)
    reporter.raise_if_errors()
    dims, inputs, hypers, unsized = [], {}, {}, []
    for s in module.statements:
        if isinstance(s, ast.DimDecl):
            dims.append(s.name)
            if s.value is None:
                unsized.append(s.name)
        elif isinstance(s, ast.InputDecl):
            inputs[s.name] = (tuple(_size(n) for n in s.shape), s.is_int)
        elif isinstance(s, ast.HyperDecl):
            hypers[s.name] = _default(s)
    return Declarations(tuple(dims), inputs, hypers, tuple(unsized))


def _size(node) -> Size:
    return node.id if isinstance(node, ast.Name) else int(node.value)


def _default(decl: ast.HyperDecl):
    """A scalar hyper's default as a float; a shaped one's as an array of its shape
    (a number given for it fills every element)."""
    if not decl.shape:
        return float(decl.default)
    value = np.asarray(decl.default, dtype=np.float64)
    shape = tuple(_size(n) for n in decl.shape)
    if all(isinstance(k, int) for k in shape) and value.shape != shape:
        value = np.broadcast_to(value, shape).copy()
    return value


def dims_from_data(decl: Declarations, arrays: dict, given: Optional[dict]) -> dict:
    """The dims to compile with: `given` (the estimator's dims=), and each dim that
    sizes one of `arrays`' inputs set from the array's shape. A size the data
    contradicts (a literal, a dim given, or one dim sizing two inputs differently) is a
    ValueError naming the input."""
    dims = dict(given or {})
    set_by: dict = {}
    for name, array in arrays.items():
        sizes, _ = decl.inputs[name]
        shape = np.shape(array)[1:]
        if len(shape) != len(sizes):
            raise ValueError(f"input {name!r} holds one value of shape "
                             f"{_text(sizes)} a sample; the data for it has shape "
                             f"{np.shape(array)}")
        for size, actual in zip(sizes, shape):
            want = size if isinstance(size, int) else dims.get(size)
            if want is not None and want != actual:
                why = (f"dim {size} = {want}" + (f" (set by input {set_by[size]!r})"
                                                  if size in set_by else " (dims=)")
                       if isinstance(size, str) else f"its declared size {size}")
                raise ValueError(f"the data for input {name!r} has {actual} "
                                 f"{'columns' if len(sizes) == 1 else 'elements'} where "
                                 f"{why} asks for {want}")
            if isinstance(size, str):
                dims[size] = actual
                set_by.setdefault(size, name)
    return dims


def _text(sizes) -> str:
    return "(" + ", ".join(map(str, sizes)) + ")" if sizes else "a scalar"
