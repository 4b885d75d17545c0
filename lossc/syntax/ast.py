"""The abstract syntax tree of a `.loss` file.

Every node carries the `Span` of the source it came from. Nodes compare by identity
(`eq=False`): trees may be thousands of levels deep, and structural equality or
hashing would recurse through them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from lossc.source import Span

# ---------------------------------------------------------------- expressions


@dataclass(eq=False)
class Num:
    """A number literal. `is_int` when written without '.', exponent: `3`, `007`."""

    value: float
    text: str
    is_int: bool
    span: Span


@dataclass(eq=False)
class Name:
    """A reference to a dim, input, param, hyper or binding; also `pi`."""

    id: str
    span: Span


@dataclass(eq=False)
class Unary:
    op: str  # "-", "+", "not"
    operand: "Expr"
    span: Span
    op_span: Span


@dataclass(eq=False)
class Binary:
    op: str  # + - * / @ ^ < <= > >= == != and or
    left: "Expr"
    right: "Expr"
    span: Span
    op_span: Span


@dataclass(eq=False)
class Keyword:
    """`axis=1` inside a call."""

    name: str
    value: "Expr"
    span: Span


@dataclass(eq=False)
class Call:
    func: str
    args: list["Expr"]
    kwargs: list[Keyword]
    span: Span
    func_span: Span


@dataclass(eq=False)
class Slice:
    """`a:b` inside brackets; either bound may be None. `:` alone is Slice(None, None)."""

    lo: Optional["Expr"]
    hi: Optional["Expr"]
    span: Span


@dataclass(eq=False)
class Index:
    """`base[i, a:b]`: one item per indexed axis."""

    base: "Expr"
    items: list[Union["Expr", Slice]]
    span: Span


@dataclass(eq=False)
class ArrayLit:
    """`[e1, e2, ...]` (a vector) or `[[a, b], [c, d]]` (a matrix: its elements are
    ArrayLit rows)."""

    elements: list["Expr"]
    span: Span


Expr = Union[Num, Name, Unary, Binary, Call, Index, ArrayLit]

# ---------------------------------------------------------------- declarations


@dataclass(eq=False)
class Init:
    """A parameter's initializer: kind is "const", "normal", "uniform" or "glorot"."""

    kind: str
    args: list[float]
    span: Span


@dataclass(eq=False)
class DimDecl:
    name: str
    value: Optional[int]
    span: Span
    name_span: Span


@dataclass(eq=False)
class InputDecl:
    name: str
    shape: list[Union[Num, Name]]  # sizes: integer literals or dim names
    is_int: bool
    span: Span
    name_span: Span


@dataclass(eq=False)
class ParamDecl:
    name: str
    shape: list[Union[Num, Name]]
    init: Optional[Init]
    span: Span
    name_span: Span


@dataclass(eq=False)
class HyperDecl:
    """`hyper h = 0.1`, `hyper h[K] = 1` (every element) or `hyper h[3] = [...]`: the
    default is a number, or nested lists of numbers (`default_span` is where)."""

    name: str
    default: object
    span: Span
    name_span: Span
    shape: list = field(default_factory=list)
    default_span: Optional[Span] = None


@dataclass(eq=False)
class Let:
    """`name = expr`."""

    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(eq=False)
class LossStmt:
    value: Expr
    span: Span


@dataclass(eq=False)
class FuncDef:
    """`def name(a, b) = expr`: a function, inlined at each call."""

    name: str
    args: list[Name]
    body: Expr
    span: Span
    name_span: Span


@dataclass(eq=False)
class OutputStmt:
    """`output name = expr`: a per-sample value to predict."""

    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(eq=False)
class PenaltyStmt:
    """`penalty = expr`: added once to the objective, whatever the reduction."""

    value: Expr
    span: Span
    keyword_span: Span


@dataclass(eq=False)
class ReduceStmt:
    kind: str  # "sum" or "mean"
    span: Span


Statement = Union[DimDecl, InputDecl, ParamDecl, HyperDecl, Let, LossStmt, PenaltyStmt,
                  ReduceStmt, FuncDef, OutputStmt]


@dataclass(eq=False)
class Module:
    statements: list[Statement]
    # names whose statement failed to parse ("loss" for the loss): later stages treat
    # them as defined-but-broken, so one mistake is not reported again at every use
    failed: dict = field(default_factory=dict)
