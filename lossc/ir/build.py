"""AST -> SSA graph: name resolution, types and shapes, and desugaring.

This is where a `.loss` file's meaning is decided: which names exist, what shape every
value has, how NumPy-style broadcasting and integer-to-real conversion apply, and how
derived forms (`mean`, `dot`, `outer`, `square`, `x ^ 2`) become primitives. Every
mistake found here becomes a diagnostic at the span of the offending expression; an
expression that failed becomes `POISON`, so one mistake does not cascade into more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from lossc import nested
from lossc.ir.graph import BOOL, INT, REAL, Builder, Graph, Node, broadcast_shapes
from lossc.ir.ops import OPS, OpDef
from lossc.ir.spec import HyperSpec, InputSpec, ParamSpec
from lossc.source import Reporter, Span, closest_name
from lossc.syntax import ast

INT64_MAX = 2 ** 63 - 1
MAX_CONSTANT_BITS = 1024     # an integer constant past 2^1024 is no float64 either
# what each kind of name is called in a message ("'k' is an input", "a binding")
KIND_WORDS = {"let": "a binding", "input": "an input", "output": "an output",
              "hyper": "a hyperparameter", "param": "a parameter", "dim": "a dim",
              "function": "a function"}


def a_kind(kind: str) -> str:
    """A kind of name with its article: "an input", "a binding"."""
    return KIND_WORDS.get(kind, f"a {kind}")
# Values a program may have once its calls are inlined. Each call copies the body (but
# for a call on the same values as an earlier one: `inline`), so a chain of functions
# that each call the previous one twice, f(f(a)), doubles the program at every link:
# forty short lines would ask for 2^40 values and compile forever. The
# bound is far above any program written out by hand (a 10,000-term sum is 20,000).
MAX_INLINED_VALUES = 100_000


class Poison(Exception):
    """An expression already reported as wrong: abandon the statement quietly."""


class Fail(Exception):
    """A new error in an expression: report it and abandon the statement."""

    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.message = message
        self.span = span


class TooLarge(Fail):
    """Inlining passed MAX_INLINED_VALUES: reported once, at the outermost call."""


def describe(node: Node) -> str:
    """How a value's type reads in messages: f64[3], f64[2, 3], f64, int, bool[3]."""
    base = {REAL: "f64", INT: "int", BOOL: "bool"}[node.dtype]
    return base + (str(list(node.shape)).replace(" ", "").replace(",", ", ")
                   if node.shape else "")


@dataclass(frozen=True)
class Derived:
    """A function of the language that is not an op: the builder desugars it into ops
    (its `call_<name>` method, or `reduction` for a reduction)."""

    name: str
    arity: int
    axis: bool = False
    reduction: bool = False


DERIVED = (Derived("square", 1), Derived("mean", 1, axis=True, reduction=True),
           Derived("dot", 2), Derived("outer", 2))


def _surface() -> dict:
    """Each function of the language -> what it builds, one entry per arity: the ops
    that name it (the op table's `names`) and the derived functions."""
    out: dict[str, dict[int, object]] = {}
    for d in list(OPS.values()) + list(DERIVED):
        for name in d.names if isinstance(d, OpDef) else (d.name,):
            assert d.arity not in out.get(name, {}), (name, d.arity)
            out.setdefault(name, {})[d.arity] = d
    return out


SURFACE = _surface()
FUNCTIONS = frozenset(SURFACE)     # the language's built-in functions (for the parser)

# integer arithmetic and the real arithmetic it means where a number is wanted
_REAL_OF_INT = {"iadd": "add", "isub": "sub", "imul": "mul", "ineg": "neg"}
_ARITH = {"+": ("add", "iadd", "add"), "-": ("sub", "isub", "subtract"),
          "*": ("mul", "imul", "multiply"), "/": ("div", None, "divide")}
_CMP = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


class Entry:
    """What a name stands for: kind is dim, input, param, hyper or let."""

    def __init__(self, kind: str, span: Span, node: Optional[Node] = None, value=None):
        self.kind, self.span, self.node, self.value = kind, span, node, value
        self.used = False


def build_graph(module: ast.Module, reporter: Reporter, dims: Optional[dict] = None) -> Graph:
    """Turn a parsed module into a graph with one output, "loss"."""
    return _Builder(reporter, dims or {}).run(module)


class _Builder:
    def __init__(self, reporter: Reporter, dims: dict):
        self.rep = reporter
        self.dims_given = dims
        self.graph = Graph()
        self.b = Builder(self.graph, share=False)
        self.names: dict[str, Entry] = {}
        self.poisoned: set[str] = set()
        self.later: dict[str, Span] = {}  # names defined further down, for "used before"
        self.offset = 0
        # the arguments of the functions being inlined, innermost last
        self.scopes: list[dict[str, Entry]] = []
        self.predictions: dict[str, Node] = {}      # "out.<name>" -> its value
        self.calls: dict[tuple, Node] = {}  # (function, argument values) -> its result

    # ------------------------------------------------------------ statements

    def run(self, module: ast.Module) -> Graph:
        stmts = module.statements
        self.poisoned |= set(module.failed)
        for s in stmts:
            name = getattr(s, "name", None)
            if name is not None and name not in self.later:
                self.later[name] = s.name_span
        loss_stmts = [s for s in stmts if isinstance(s, ast.LossStmt)]
        penalties = [s for s in stmts if isinstance(s, ast.PenaltyStmt)]
        self.reduces = [s for s in stmts if isinstance(s, ast.ReduceStmt)]
        loss_node = penalty_node = None
        for s in stmts:
            self.b.span = s.span
            try:
                if isinstance(s, ast.LossStmt):
                    if s is not loss_stmts[0]:
                        raise Fail("the loss is already defined at line "
                                   f"{loss_stmts[0].span.line}; a file has exactly one "
                                   "'loss = ...'", s.span)
                    loss_node = self.loss(s)
                elif isinstance(s, ast.PenaltyStmt):
                    if s is not penalties[0]:
                        raise Fail("the penalty is already defined at line "
                                   f"{penalties[0].span.line}; a file has at most one "
                                   "'penalty = ...'", s.keyword_span)
                    penalty_node = self.penalty(s)
                else:
                    getattr(self, "stmt_" + type(s).__name__)(s)
            except Fail as f:
                self.rep.error(f.message, f.span)
                if getattr(s, "name", None):
                    self.poisoned.add(s.name)
            except Poison:
                if getattr(s, "name", None):
                    self.poisoned.add(s.name)
        if not loss_stmts and "loss" not in module.failed:
            self.rep.error("no loss: the file must define the per-sample loss with "
                           "'loss = ...'", self.rep.source.end_span())
        self.graph.dims = {k: e.value for k, e in self.names.items() if e.kind == "dim"}
        if loss_node is not None:
            self.graph.outputs["loss"] = loss_node
            if penalty_node is not None:
                self.graph.outputs["penalty"] = penalty_node
            self.graph.outputs.update(self.predictions)
            self.wide_integers()
            self.warn_unused(stmts, [loss_node, penalty_node])
        return self.graph

    def wide_integers(self) -> None:
        """An error for each integer constant beyond 64 bits that the outputs use as an
        integer (an index computed with it, an int binding so used): the code computes
        integers in 64 bits. (Used as a number, it was converted to a real.)"""
        live = self.graph.reachable(list(self.graph.outputs.values()))
        for n in self.graph.nodes:
            if (n.id in live and n.op == "iconst"
                    and not -INT64_MAX - 1 <= n.attr("value") <= INT64_MAX):
                self.rep.error(f"{self.constant_text(n)} is beyond 64 bits, where it is "
                               "used as an integer (integers are computed in 64 bits)",
                               n.span)

    def constant_text(self, n: Node) -> str:
        """An integer constant as the source writes it, and its value if that differs:
        "3037000500 * 3037000500 = 9223372037000250000"."""
        value = n.attr("value")
        digits = (str(value) if len(str(value)) <= 40
                  else f"(a value of {len(str(abs(value)))} digits)")
        text = self.rep.source.span_text(n.span)
        if not text or len(text) > 60 or text == str(value):
            return f"integer constant {digits}"
        return f"integer constant {text} = {digits}".replace("= (a value", "(a value")

    def define(self, name: str, entry: Entry) -> None:
        if name in self.names:
            prev = self.names[name]
            raise Fail(f"'{name}' is already defined at line {prev.span.line}; "
                       "every name is bound once", entry.span)
        self.names[name] = entry

    def size(self, item) -> int:
        """A size in a declaration: an integer literal or a dim."""
        if isinstance(item, ast.Num):
            if not item.is_int or item.value < 1:
                raise Fail(f"a size must be a positive integer, got {item.text}", item.span)
            if item.value > INT64_MAX:
                raise Fail(f"size {item.text} is too large", item.span)
            return int(item.text)
        e = self.lookup(item.id, item.span)
        if e.kind != "dim":
            raise Fail(f"a size must be a dim or an integer literal; '{item.id}' is "
                       f"{a_kind(e.kind)}", item.span)
        return e.value

    def stmt_DimDecl(self, s: ast.DimDecl) -> None:
        value = self.dims_given.get(s.name, s.value)
        if value is None:
            self.define(s.name, Entry("dim", s.name_span, value=1))
            raise Fail(f"dim '{s.name}' has no value: give it when compiling "
                       f"(--dim {s.name}=16, or dims={{'{s.name}': 16}})", s.span)
        if isinstance(value, bool) or not isinstance(value, (int,)) or value < 1:
            try:
                ok = float(value).is_integer() and value >= 1
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise Fail(f"dim '{s.name}' must be a positive integer, got {value!r}",
                           s.span)
            value = int(value)
        if value > INT64_MAX:        # (a literal that large is refused by the parser)
            raise Fail(f"dim '{s.name}' = {value} is too large (at most 2^63 - 1)", s.span)
        self.define(s.name, Entry("dim", s.name_span, value=int(value)))

    def stmt_InputDecl(self, s: ast.InputDecl) -> None:
        shape = tuple(self.size(i) for i in s.shape)
        if s.is_int and len(shape) > 1:
            raise Fail(f"int input '{s.name}' must be a scalar or a vector (integers per "
                       "sample)", s.span)
        index = len(self.graph.inputs)
        node = self.b.emit("input", (), span=s.name_span, name=s.name, shape=shape,
                           is_int=s.is_int, index=index)
        self.define(s.name, Entry("input", s.name_span, node))
        self.graph.inputs.append(InputSpec(s.name, shape, s.is_int))

    def stmt_ParamDecl(self, s: ast.ParamDecl) -> None:
        shape = tuple(self.size(i) for i in s.shape)
        init = ("const", (0.0,))
        if s.init is not None:
            init = (s.init.kind, tuple(float(a) for a in s.init.args))
            if s.init.kind in ("normal", "uniform") and len(init[1]) != 2:
                raise Fail(f"{s.init.kind}() takes 2 arguments", s.init.span)
            if s.init.kind == "normal" and init[1][1] < 0:
                raise Fail("normal(mean, std) needs std >= 0", s.init.span)
            if s.init.kind == "uniform" and init[1][0] > init[1][1]:
                raise Fail("uniform(lo, hi) needs lo <= hi", s.init.span)
        size = math.prod(shape)
        node = self.b.emit("param", (), span=s.name_span, name=s.name, shape=shape,
                           offset=self.offset)
        self.define(s.name, Entry("param", s.name_span, node))
        self.graph.params.append(ParamSpec(s.name, shape, init, self.offset))
        self.offset += size

    def stmt_HyperDecl(self, s: ast.HyperDecl) -> None:
        shape = tuple(self.size(i) for i in s.shape)
        default = self.hyper_default(s, shape)
        offset = sum(h.size for h in self.graph.hypers)
        attrs = {"shape": shape} if shape else {}
        node = self.b.emit("hyper", (), span=s.name_span, name=s.name, index=offset, **attrs)
        self.define(s.name, Entry("hyper", s.name_span, node))
        self.graph.hypers.append(HyperSpec(s.name, default, shape, offset))

    def hyper_default(self, s: ast.HyperDecl, shape: tuple):
        """A float for a scalar hyper; the elements (C order) for a shaped one: a number
        fills it, a literal must have its shape."""
        if not isinstance(s.default, list):
            return float(s.default) if not shape else (float(s.default),) * math.prod(shape)
        if not shape:
            raise Fail(f"hyper '{s.name}' is a scalar; a literal default needs a shape, "
                       f"e.g. 'hyper {s.name}[{len(s.default)}] = [...]'", s.default_span)
        got = _literal_shape(s.default)
        if got != shape:
            shown = "ragged" if got is None else str(list(got))
            raise Fail(f"the default of hyper '{s.name}' has shape {shown}; its declared "
                       f"shape is {list(shape)}", s.default_span)
        return tuple(float(v) for v in _flatten(s.default))

    def stmt_Let(self, s: ast.Let) -> None:
        if s.name in self.names:
            prev = self.names[s.name]
            raise Fail(f"'{s.name}' is already defined at line {prev.span.line}; "
                       "every name is bound once", s.name_span)
        node = nested.run(self.expr(s.value))
        self.names[s.name] = Entry("let", s.name_span, node)

    def stmt_FuncDef(self, s: ast.FuncDef) -> None:
        """A function is checked here for the names its body uses (its arguments, dims,
        functions defined before it); shapes are checked at each call, where it is
        inlined."""
        for a in s.args:
            if a.id in self.later or a.id in self.names:
                where = (self.names[a.id].span if a.id in self.names else self.later[a.id])
                raise Fail(f"argument '{a.id}' of '{s.name}' has the name of "
                           f"{a_kind(self.kind_of(a.id))} (line {where.line}); arguments must be "
                           "named apart from the file's names", a.span)
        args = {a.id for a in s.args}
        for n in _names_in(s.body):
            if n.id in args or n.id in self.poisoned:
                continue
            e = self.names.get(n.id)
            if e is not None and e.kind in ("dim", "function"):
                continue
            if e is not None:
                raise Fail(f"the body of '{s.name}' cannot use "
                           f"{'binding' if e.kind == 'let' else e.kind} '{n.id}': a function "
                           "sees only its arguments, dims and functions (pass "
                           f"'{n.id}' as an argument)", n.span)
            dims = [k for k, v in self.names.items() if v.kind == "dim"]
            guess = closest_name(n.id, list(args) + dims)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise Fail(f"unknown name '{n.id}' in the body of '{s.name}'{hint}", n.span)
        self.define(s.name, Entry("function", s.name_span, value=s))

    def kind_of(self, name: str) -> str:
        """What a name of the file is (it may be defined further down)."""
        if name in self.names:
            return self.names[name].kind
        return "name defined in the file"

    def stmt_OutputStmt(self, s: ast.OutputStmt) -> None:
        """A value to predict, per sample: real (a bool as 0.0 / 1.0, an int as a
        number); the graph's output "out.<name>". It changes nothing else."""
        if s.name in self.names:
            prev = self.names[s.name]
            raise Fail(f"'{s.name}' is already defined at line {prev.span.line}; "
                       "every name is bound once", s.name_span)
        node = nested.run(self.expr(s.value))
        if node.dtype == BOOL:
            node = self.b.where(node, self.b.const(1.0, node.shape),
                                self.b.const(0.0, node.shape))
        node = self.real(node)
        self.names[s.name] = Entry("output", s.name_span, node)
        self.predictions["out." + s.name] = node

    def stmt_ReduceStmt(self, s: ast.ReduceStmt) -> None:
        first = self.reduces[0]
        if s is not first:
            raise Fail(f"the reduction is already given at line {first.span.line} "
                       f"('reduce {first.kind}'); a file has at most one 'reduce'", s.span)
        self.graph.reduce = s.kind

    def loss(self, s: ast.LossStmt) -> Node:
        node = self.real(nested.run(self.expr(s.value)), s.value.span, "the loss")
        if node.shape != ():
            raise Fail(f"the loss must be a real scalar, got {describe(node)}; "
                       "reduce it, e.g. with sum(...)", s.value.span)
        return node

    def penalty(self, s: ast.PenaltyStmt) -> Node:
        """A real scalar that no input reaches: it is added once per call."""
        node = self.real(nested.run(self.expr(s.value)), s.value.span, "the penalty")
        if node.shape != ():
            raise Fail(f"the penalty must be a real scalar, got {describe(node)}; "
                       "reduce it, e.g. with sum(...)", s.value.span)
        inputs = [n for n in self.graph.nodes
                  if n.op == "input" and n.id in self.graph.reachable([node])]
        if inputs:
            name, span = self.input_use(s.value, {n.attr("name") for n in inputs})
            what = f"input '{inputs[0].attr('name')}'"
            via = (f"'{name}' is an input" if name in self.names
                   and self.names[name].kind == "input" else
                   f"'{name}' depends on {what}" if name else f"it depends on {what}")
            raise Fail(f"the penalty is added once per call and cannot depend on an input: "
                       f"{via} (put per-sample terms in the loss)", span)
        return node

    def input_use(self, e, input_names: set) -> tuple[str, Span]:
        """The first name in e (in source order) that is an input or a binding computed
        from one of `input_names`."""
        for n in _names_in(e):
            entry = self.names.get(n.id)
            if entry is None or entry.node is None:
                continue
            reach = self.graph.reachable([entry.node])
            if entry.kind == "input" or any(i.op == "input" and i.attr("name") in input_names
                                             and i.id in reach for i in self.graph.nodes):
                return n.id, n.span
        return "", e.span

    def warn_unused(self, stmts, roots: list) -> None:
        """Warnings for what neither the loss nor the penalty uses."""
        reach = self.graph.reachable([r for r in roots if r is not None])
        for s in stmts:
            e = self.names.get(getattr(s, "name", None) or "")
            if e is None or e.span is not s.name_span:
                continue
            if isinstance(s, ast.ParamDecl) and e.node.id not in reach:
                self.rep.warning(f"parameter '{s.name}' does not affect the loss; its "
                                 "gradient is always zero", s.name_span)
            elif isinstance(s, ast.InputDecl) and not e.used:
                self.rep.warning(f"input '{s.name}' is declared but never used",
                                 s.name_span)
            elif isinstance(s, ast.Let) and not e.used:
                self.rep.warning(f"'{s.name}' is computed but never used", s.name_span)

    # ------------------------------------------------------------ names

    def lookup(self, name: str, span: Span) -> Entry:
        if self.scopes and name in self.scopes[-1]:
            return self.scopes[-1][name]
        if name in self.poisoned:
            raise Poison()
        e = self.names.get(name)
        if e is None:
            if name in self.later:
                raise Fail(f"'{name}' is used before it is defined (line "
                           f"{self.later[name].line})", span)
            # (a suggestion costs a look at every name: not for an error only counted)
            guess = None if self.rep.full else closest_name(name, self.names)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise Fail(f"unknown name '{name}'{hint}", span)
        e.used = True
        return e

    # ------------------------------------------------------------ expressions

    def expr(self, e):
        """The task that builds e's node (see lossc/nested.py): a leaf at once; a
        compound expression's method is a generator that yields the task of each
        sub-expression, `x = yield self.expr(e.operand)`, so a tree of any depth is
        built without nested Python calls."""
        if isinstance(e, ast.Num):
            return self.ex_Num(e)
        if isinstance(e, ast.Name):
            return self.ex_Name(e)
        return (yield from getattr(self, "ex_" + type(e).__name__)(e))

    def ex_Num(self, e: ast.Num) -> Node:
        if not math.isfinite(e.value):
            raise Fail(f"number {e.text} is out of range", e.span)
        if e.is_int and int(e.text) <= INT64_MAX:      # (not the float: 2^63 - 8 rounds up)
            return self.b.emit("iconst", (), span=e.span, value=int(e.text))
        return self.b.emit("const", (), span=e.span, value=float(e.value))

    def ex_Name(self, e: ast.Name) -> Node:
        entry = self.lookup(e.id, e.span)
        if entry.kind == "dim":
            return self.b.emit("iconst", (), span=e.span, value=entry.value)
        return entry.node

    def ex_Unary(self, e: ast.Unary):
        x = yield self.expr(e.operand)
        if e.op == "+":
            self.number(x, e.operand.span, "unary '+'")
            return x
        if e.op == "not":
            if x.dtype != BOOL:
                raise Fail(f"'not' needs a bool value, got {describe(x)}", e.operand.span)
            return self.b.emit("not", (x,), span=e.span)
        self.number(x, e.operand.span, "unary '-'")
        if x.dtype == INT and x.shape == ():
            return self.int_op("ineg", (x,), e.span)
        if _is_integer_literal(e.operand, INT64_MAX + 1):     # -2^63, the 64-bit least
            return self.b.emit("iconst", (), span=e.span, value=-INT64_MAX - 1)
        return self.b.emit("neg", (self.real(x),), span=e.span)

    def ex_Binary(self, e: ast.Binary):
        x = yield self.expr(e.left)
        y = yield self.expr(e.right)
        op = e.op
        if op in ("and", "or"):
            for v, sub in ((x, e.left), (y, e.right)):
                if v.dtype != BOOL:
                    raise Fail(f"'{op}' needs bool values, got {describe(v)}", sub.span)
            return self.elementwise(op, x, y, e)
        self.number(x, e.left.span, f"'{op}'")
        self.number(y, e.right.span, f"'{op}'")
        if op in _CMP:
            return self.elementwise(_CMP[op], self.real(x), self.real(y), e)
        if op == "@":
            return self.matmul(x, y, e)
        if op == "^":
            return self.power(x, y, e.span, e.right)
        real_op, int_op, verb = _ARITH[op]
        # (integer arithmetic is scalar: it computes indices; an int vector is a number)
        if int_op and x.dtype == INT and y.dtype == INT and x.shape == y.shape == ():
            return self.int_op(int_op, (x, y), e.span)
        return self.elementwise(real_op, self.real(x), self.real(y), e, verb)

    def ex_ArrayLit(self, e: ast.ArrayLit):
        """A vector of scalar elements, or a matrix of equal rows; the gradient flows to
        each element."""
        rows = [r for r in e.elements if isinstance(r, ast.ArrayLit)]
        if rows and len(rows) != len(e.elements):
            odd = next(x for x in e.elements if not isinstance(x, ast.ArrayLit))
            raise Fail("a matrix literal's rows are all literals [...]: this element is "
                       "not", odd.span if rows[0] is e.elements[0] else rows[0].span)
        for r in rows:
            deeper = next((x for x in r.elements if isinstance(x, ast.ArrayLit)), None)
            if deeper is not None:
                raise Fail("array literals nest no deeper than a matrix", deeper.span)
            if len(r.elements) != len(rows[0].elements):
                raise Fail(f"the rows of a matrix literal must have the same length: row "
                           f"{rows.index(r) + 1} has {len(r.elements)} elements, row 1 has "
                           f"{len(rows[0].elements)}", e.span)
        items = [x for r in rows for x in r.elements] if rows else e.elements
        nodes = []
        for x in items:
            v = yield self.expr(x)
            if v.dtype == BOOL or v.shape != ():
                raise Fail(f"the elements of an array literal are real scalars, got "
                           f"{describe(v)}", x.span)
            nodes.append(self.real(v))
        shape = (len(rows), len(rows[0].elements)) if rows else (len(items),)
        return self.b.emit("pack", tuple(nodes), span=e.span, shape=shape)

    def ex_Index(self, e: ast.Index):
        x = yield self.expr(e.base)
        if len(e.items) > x.rank:
            raise Fail(f"too many indices: {describe(x)} has {x.rank} "
                       f"ax{'i' if x.rank == 1 else 'e'}s, got {len(e.items)}", e.span)
        axis, gathered = 0, None
        for item in e.items:
            if isinstance(item, ast.Slice):
                lo, hi = yield from self.slice_bounds(item, x.shape[axis])
                if (lo, hi) != (0, x.shape[axis]):
                    x = self.b.emit("slice", (x,), span=e.span, axis=axis, start=lo, stop=hi)
                axis += 1
                continue
            i = yield from self.index(item, x.shape[axis])
            if i.rank == 0:
                x = self.b.emit("take", (x, i), span=e.span, axis=axis)
                continue
            # an int vector gathers: the axis becomes the vector's
            if gathered is not None:
                raise Fail("one int vector index per indexing: index the result again "
                           "for another", item.span)
            gathered = item
            x = self.b.emit("gather", (x, i), span=e.span, axis=axis)
            axis += 1
        return x

    def ex_Call(self, e: ast.Call):
        f = e.func
        if f not in SURFACE:
            return (yield from self.inline(e))
        by_arity = SURFACE[f]
        lo, hi = min(by_arity), max(by_arity)
        n = len(e.args)
        if n not in by_arity:
            want = str(lo) if lo == hi else f"{lo} or {hi}"
            raise Fail(f"{f}() takes {want} argument{'s' if hi > 1 else ''}, got {n}",
                       e.func_span)
        entry = by_arity[n]
        axis = None
        for kw in e.kwargs:
            if kw.name != "axis" or not entry.axis:
                raise Fail(f"{f}() takes no keyword argument '{kw.name}'", kw.span)
            if axis is not None:
                raise Fail("axis is given twice", kw.span)
            v = kw.value
            if not (isinstance(v, ast.Num) and v.is_int and v.value in (0, 1)):
                raise Fail("axis must be written as 0 or 1", v.span)
            axis = int(v.value)
        args = []
        for a in e.args:
            args.append((yield self.expr(a)))
        for a, sub in zip(args, e.args):
            if f != "where" or a is not args[0]:
                self.number(a, sub.span, f"{f}()")
        special = getattr(self, "call_" + f, None)
        if special is not None:
            return special(args, axis, e)
        if entry.reduction:
            return self.reduction(entry.name, self.real(args[0]), axis, e)
        if n == 1:      # an elementwise function
            return self.b.emit(entry.name, (self.real(args[0]),), span=e.span)
        return self.elementwise(entry.name, self.real(args[0]), self.real(args[1]), e)

    def inline(self, e: ast.Call):
        """A call of a function of the file: its body built with the arguments' values
        (any shapes the body type-checks for). An error inside the body points there
        and names this call."""
        entry = self.lookup(e.func, e.func_span)
        if entry.kind != "function":
            raise Fail(f"'{e.func}' is {a_kind(entry.kind)}, not a function", e.func_span)
        fd: ast.FuncDef = entry.value
        if len(e.args) != len(fd.args) or e.kwargs:
            names = ", ".join(a.id for a in fd.args)
            got = f"got {len(e.args)}" + (" and a keyword argument" if e.kwargs else "")
            raise Fail(f"{fd.name}() takes {len(fd.args)} argument"
                       f"{'s' * (len(fd.args) != 1)} ({names}), {got}", e.func_span)
        scope = {}
        for a, arg in zip(fd.args, e.args):
            scope[a.id] = Entry("argument", a.span, (yield self.expr(arg)))
        # a call of the same function on the same values is the same value: built
        # once, so `g(a) = f(a) + f(a)` chained grows the program by a link, not twice
        key = (id(fd), tuple(entry.node.id for entry in scope.values()))
        if key in self.calls:
            return self.calls[key]
        self.scopes.append(scope)
        try:
            body = yield self.expr(fd.body)
            if len(self.graph.nodes) > MAX_INLINED_VALUES:
                raise TooLarge("", e.span)
            self.calls[key] = body
            return body
        except TooLarge:
            raise TooLarge(f"the program is too large once its calls are inlined (more "
                           f"than {MAX_INLINED_VALUES:,} values): each call copies the "
                           f"function's body, so calls of calls multiply", e.span) from None
        except Fail as f:
            at = f"line {e.func_span.line}, col {e.func_span.col}"
            raise Fail(f"{f.message} (in the call of {fd.name}() at {at})", f.span) from None
        finally:
            self.scopes.pop()

    # the functions built otherwise than as their op (or derived from others)

    def call_square(self, args, axis, e):
        return self.b.emit("powi", (self.real(args[0]),), span=e.span, n=2)

    def call_pow(self, args, axis, e):
        return self.power(args[0], args[1], e.span, e.args[1])

    def call_where(self, args, axis, e):
        b = self.b
        c, x, y = args[0], self.real(args[1]), self.real(args[2])
        if c.dtype != BOOL:
            raise Fail(f"where() needs a condition (a comparison), got {describe(c)}",
                       e.args[0].span)
        shape = broadcast_shapes(c.shape, x.shape)
        shape = broadcast_shapes(shape, y.shape) if shape is not None else None
        if shape is None:
            raise Fail(f"shape mismatch: cannot broadcast where() operands {describe(c)},"
                       f" {describe(x)} and {describe(y)}", e.span)
        return b.emit("where", (b.broadcast(c, shape), b.broadcast(x, shape),
                                b.broadcast(y, shape)), span=e.span)

    def call_dot(self, args, axis, e):
        b = self.b
        x, y = self.real(args[0]), self.real(args[1])
        if x.rank != 1 or y.rank != 1 or x.shape != y.shape:
            raise Fail(f"dot() takes two vectors of the same size, got {describe(x)} and "
                       f"{describe(y)}", e.span)
        return b.emit("sum", (b.emit("mul", (x, y), span=e.span),), span=e.span, axes=(0,))

    def call_transpose(self, args, axis, e):
        x = self.real(args[0])
        if x.rank != 2:
            raise Fail(f"transpose() takes a matrix, got {describe(x)}", e.span)
        return self.b.emit("transpose", (x,), span=e.span)

    def call_outer(self, args, axis, e):
        b = self.b
        x, y = self.real(args[0]), self.real(args[1])
        if x.rank != 1 or y.rank != 1:
            raise Fail(f"outer() takes two vectors, got {describe(x)} and {describe(y)}",
                       e.span)
        shape = (x.shape[0], y.shape[0])
        return b.emit("mul", (b.broadcast(x, shape, (0,)), b.broadcast(y, shape, (1,))),
                      span=e.span)

    def call_softmax(self, args, axis, e, f="softmax"):
        x = self.real(args[0])
        if x.rank == 0 or (x.rank == 2 and axis is None):
            raise Fail(f"{f}() takes a vector, or a matrix with axis=0 or axis=1; got "
                       f"{describe(x)}", e.span)
        if x.rank == 1 and axis not in (None, 0):
            raise Fail(f"axis={axis} is out of range for {describe(x)}", e.span)
        return self.b.emit(f, (x,), span=e.span, axis=axis or 0)

    def call_log_softmax(self, args, axis, e):
        return self.call_softmax(args, axis, e, "log_softmax")

    # ------------------------------------------------------------ helpers

    def number(self, x: Node, span: Span, what: str) -> None:
        if x.dtype == BOOL:
            raise Fail(f"{what} needs a number, got a bool value ({describe(x)}); "
                       "to choose between numbers use where(cond, a, b)", span)

    def real(self, x: Node, span: Optional[Span] = None, what: str = "") -> Node:
        if x.dtype == BOOL and span is not None:
            raise Fail(f"{what} must be a number, got a bool value", span)
        if x.dtype == INT:
            return self.int_as_real(x)
        return x

    def int_as_real(self, x: Node) -> Node:
        """An integer expression used as a number: the same arithmetic on reals, from
        its int inputs and constants converted. It cannot overflow, where the 64-bit
        arithmetic of an index can (an index error then); exact while the values stay
        within 2^53. (Iterative: the expression may be long.)"""
        done: dict[int, Node] = {}
        stack = [x]
        while stack:
            n = stack[-1]
            if n.id in done:
                stack.pop()
                continue
            real_op = _REAL_OF_INT.get(n.op)
            todo = [i for i in n.inputs if i.id not in done] if real_op else []
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if n.op == "iconst":
                try:
                    value = float(n.attr("value"))
                except OverflowError:
                    raise Fail(f"{self.constant_text(n)} overflows float64", n.span) from None
                done[n.id] = self.b.emit("const", (), value=value)
            elif real_op is None:
                done[n.id] = self.b.emit("to_real", (n,))
            else:
                done[n.id] = self.b.emit(real_op, tuple(done[i.id] for i in n.inputs),
                                         span=n.span)
        return done[x.id]

    def int_op(self, op: str, xs: tuple, span: Span) -> Node:
        if all(x.op == "iconst" for x in xs):
            vals = [x.attr("value") for x in xs]
            v = {"iadd": lambda a, b: a + b, "isub": lambda a, b: a - b,
                 "imul": lambda a, b: a * b, "ineg": lambda a: -a}[op](*vals)
            # exact, as Python's integers: checked against 64 bits where an integer
            # is required (wide_integers), converted to the nearest real where it is
            # used as a number (int_as_real), as a literal beyond 64 bits is; one past
            # float64's range is neither, and an error at once (a chain of squarings
            # would otherwise grow without bound)
            if abs(v).bit_length() > MAX_CONSTANT_BITS:
                raise Fail("integer constant expression overflows float64 (its value is "
                           f"beyond 2^{MAX_CONSTANT_BITS})", span)
            return self.b.emit("iconst", (), span=span, value=v)
        return self.b.emit(op, xs, span=span)

    def elementwise(self, op: str, x: Node, y: Node, e, verb: Optional[str] = None) -> Node:
        shape = broadcast_shapes(x.shape, y.shape)
        if shape is None:
            verb = verb or {"maximum": "take max of", "minimum": "take min of"}.get(op, op)
            raise Fail(f"shape mismatch: cannot {verb} {describe(x)} and {describe(y)}",
                       e.span)
        return self.b.emit(op, (self.b.broadcast(x, shape), self.b.broadcast(y, shape)),
                           span=e.span)

    def power(self, x: Node, y: Node, span: Span, right) -> Node:
        if y.op == "iconst" and isinstance(self._literal(right), ast.Num):
            n = y.attr("value")
            x = self.real(x)
            if n == 0:
                return self.b.const(1.0, x.shape)
            if abs(n) <= 64:
                return self.b.emit("powi", (x,), span=span, n=n)
        return self.elementwise("pow", self.real(x), self.real(y),
                                _Spanned(span), "raise")

    def refuse_wide_integer(self, e) -> None:
        """An integer literal beyond 64 bits where an integer is required: it was read
        as a real, and "must be an int" would puzzle."""
        lit = self._literal(e)
        if isinstance(lit, ast.Num) and lit.is_int and int(lit.text) > INT64_MAX:
            text = self.rep.source.span_text(e.span)
            raise Fail(f"integer {text or lit.text} is beyond 64 bits: an index is a "
                       "64-bit integer", e.span)

    def _literal(self, e):
        """The literal under any signs: `-2` in `x ^ -2` counts as an integer literal."""
        while isinstance(e, ast.Unary) and e.op in "+-":
            e = e.operand
        return e

    def matmul(self, x: Node, y: Node, e: ast.Binary) -> Node:
        x, y = self.real(x), self.real(y)
        if x.rank == 0 or y.rank == 0:
            raise Fail(f"'@' needs vectors or matrices, got {describe(x)} @ {describe(y)}; "
                       "use '*' for scalars", e.span)
        if x.shape[-1] != y.shape[0]:
            raise Fail(f"shape mismatch in '@': {describe(x)} @ {describe(y)} (inner sizes "
                       f"{x.shape[-1]} and {y.shape[0]} differ)", e.span)
        if x.rank == 1 and y.rank == 1:
            return self.b.emit("sum", (self.b.emit("mul", (x, y), span=e.span),),
                               span=e.span, axes=(0,))
        return self.b.emit("matmul", (x, y), span=e.span)

    def reduction(self, f: str, x: Node, axis: Optional[int], e: ast.Call) -> Node:
        if x.rank == 0:
            raise Fail(f"{f}() reduces a vector or matrix, got a scalar ({describe(x)})",
                       e.span)
        if axis is not None and x.rank != 2:
            raise Fail(f"axis= applies to matrices only; {f}() got {describe(x)}", e.span)
        axes = (axis,) if axis is not None else tuple(range(x.rank))
        if f == "mean":
            count = math.prod(x.shape[a] for a in axes)
            s = self.b.emit("sum", (x,), span=e.span, axes=axes)
            return self.b.mul(s, self.b.const(1.0 / count))
        return self.b.emit(f, (x,), span=e.span, axes=axes)

    def index(self, item, size: int):
        i = yield self.expr(item)
        if i.dtype != INT:
            self.refuse_wide_integer(item)
            kind = "a bool" if i.dtype == BOOL else "a real value"
            raise Fail(f"an index must be an int (an int input, a dim, an integer literal, "
                       f"or + - * of those), got {kind} ({describe(i)})", item.span)
        if i.op == "iconst":
            v = i.attr("value")
            v = v + size if v < 0 else v
            if not 0 <= v < size:
                raise Fail(f"index {i.attr('value')} is out of range for an axis of size "
                           f"{size}", item.span)
            return i if v == i.attr("value") else self.b.emit("iconst", (), span=item.span,
                                                              value=v)
        check = len(self.graph.index_checks)
        text = self.rep.source.span_text(item.span)
        self.graph.index_checks.append({"text": text or "index", "size": size,
                                        "line": item.span.line, "col": item.span.col})
        return self.b.emit("checked_index", (i,), span=item.span, size=size, check=check)

    def slice_bounds(self, item: ast.Slice, size: int):
        def bound(e, default):
            if e is None:
                return default
            v = yield self.expr(e)
            if v.op != "iconst":
                self.refuse_wide_integer(e)
                raise Fail("slice bounds must be integer constants (literals, dims, "
                           "+ - * of those)", e.span)
            v = v.attr("value")
            return v + size if v < 0 else v
        lo = yield from bound(item.lo, 0)
        hi = yield from bound(item.hi, size)
        if not (0 <= lo < hi <= size):
            text = self.rep.source.span_text(item.span)
            shown = (f"slice {lo}:{hi}" if not text or text == f"{lo}:{hi}" or len(text) > 40
                     else f"slice {text} ({lo}:{hi} on this axis)")
            raise Fail(f"{shown} must lie inside an axis of size {size} and not be empty",
                       item.span)
        return lo, hi


def _names_in(e) -> list:
    """Every Name node in an expression, in source order (iteratively: bodies may be
    deep)."""
    found, stack = [], [e]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name):
            found.append(n)
            continue
        for child in (getattr(n, "operand", None), getattr(n, "left", None),
                      getattr(n, "right", None), getattr(n, "base", None),
                      getattr(n, "lo", None), getattr(n, "hi", None)):
            if child is not None:
                stack.append(child)
        stack.extend(getattr(n, "args", []))
        stack.extend(k.value for k in getattr(n, "kwargs", []))
        stack.extend(getattr(n, "items", []))
        stack.extend(getattr(n, "elements", []))
    return sorted(found, key=lambda n: (n.span.line, n.span.col))


def _is_integer_literal(e, value: int) -> bool:
    return isinstance(e, ast.Num) and e.is_int and int(e.text) == value


def _literal_shape(v) -> Optional[tuple]:
    """The shape of nested lists of numbers (None if ragged or deeper than 2)."""
    if not isinstance(v, list):
        return ()
    inner = {_literal_shape(x) for x in v}
    if len(inner) != 1 or None in inner or len(next(iter(inner))) > 1:
        return None
    return (len(v),) + next(iter(inner))


def _flatten(v) -> list:
    return [y for x in v for y in _flatten(x)] if isinstance(v, list) else [v]


class _Spanned:
    """Adapter giving a bare span the `.span` attribute `elementwise` reports at."""

    def __init__(self, span: Span):
        self.span = span
