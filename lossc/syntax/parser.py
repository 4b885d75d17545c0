"""Tokens -> AST, by recursive descent. One statement per line.

Binary operators are parsed by precedence climbing (`binary`), lowest first:

    or  <  and  <  not (prefix)  <  comparisons (not chained)  <  + -  <  * / @
    <  unary - +  <  ^ (right-associative; its right operand is a unary expression)
    <  call, index (postfix)

A chain of one level (`a + a + ... + a`), a run of prefix signs (`- - x`) and a tower of
powers (`a ^ b ^ c ...`) are all built in loops. Brackets nest: the expression methods
are generators, and the one inside a pair of brackets is a task of its own, run by
`lossc.nested.run` from a list rather than by a nested Python call, so nesting costs no
Python stack at all. Nesting deeper than MAX_NESTING is refused with a clean error.

Errors: each statement is parsed inside a try; the first mistake in it is recorded and
the parser resumes at the next statement, so independent mistakes on different lines are
reported together. Lexical errors are merged in, and a syntax error right after a
lexical one in the same statement is not reported (it is most likely a consequence).
"""
from __future__ import annotations

import bisect
import math
from typing import Optional

from lossc import nested
from lossc.source import Reporter, Source, Span, closest_name
from lossc.syntax import ast
from lossc.syntax.lexer import (EOF, INITIALIZERS, KEYWORDS, NAME, NEWLINE, NUMBER, OP,
                                V2_FUNCTIONS, V2_KEYWORDS, Token, describe, tokenize)

MAX_NESTING = 5000          # brackets open at once
INT64_MAX = 2 ** 63 - 1

DECLARATIONS = frozenset({"dim", "input", "param", "hyper", "reduce", "def", "output"})
# statements `KEYWORD = expression` (the objective's parts)
STATEMENT_KEYWORDS = frozenset({"loss", "penalty"})
_NOT = 3                     # precedence of prefix 'not'
_CMP = 4                     # precedence of the comparisons
_BINARY = {"or": 1, "and": 2, "<": _CMP, "<=": _CMP, ">": _CMP, ">=": _CMP, "==": _CMP,
           "!=": _CMP, "+": 5, "-": 5, "*": 6, "/": 6, "@": 6}


class _Fail(Exception):
    """A syntax error; ends the statement it is found in."""

    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.message, self.span = message, span


def _unmatched(closer: Token) -> str:
    opener = "(" if closer.text == ")" else "["
    return f"unexpected '{closer.text}': there is no '{opener}' to close"


def parse(source: Source, reporter: Reporter, functions: frozenset) -> ast.Module:
    """Parse a whole file. Syntax errors go to `reporter` (it does not raise); the
    statements that parsed are returned. `functions` are the names of the language's
    built-in functions (lossc/ir/build.py FUNCTIONS, from the op table): only they can
    be called, and no declaration or binding may take one."""
    tokens, lexical = tokenize(source)
    parser = _Parser(tokens, lexical, functions)
    module = parser.module()
    # report in source order, lexical and syntax errors interleaved
    for message, span in sorted(lexical + parser.errors, key=lambda e: (e[1].line, e[1].col)):
        reporter.error(message, span)
    return module


class _Parser:
    def __init__(self, tokens: list[Token], lexical: list[tuple[str, Span]],
                 functions: frozenset):
        # what may stand before '(' (`where` is a keyword but called like a function),
        # and the names no declaration or binding may take
        self.callable = frozenset(functions) | {"where"}
        self.functions = self.callable - KEYWORDS
        self.reserved = KEYWORDS | self.functions | INITIALIZERS | {"axis"}
        self.toks = tokens
        self.pos = 0
        self.depth = 0          # brackets open: line breaks inside them are blanks
        self.lexical = [(s.line, s.col) for _, s in lexical]     # in source order
        self.failed: dict = {}
        self.errors: list[tuple[str, Span]] = []
        # user functions: those defined so far, every `def NAME` of the file (for "used
        # before it is defined"), and the one whose body is being parsed
        self.defined: set = set()
        self.declared: set = set()      # the names other statements define, so far
        self.defs_later = {tokens[k + 1].text: tokens[k + 1].span
                           for k in range(len(tokens) - 1)
                           if tokens[k].kind is NAME and tokens[k].text == "def"
                           and tokens[k + 1].kind is NAME
                           and (k == 0 or tokens[k - 1].kind is NEWLINE)}
        self.in_def = None

    # ------------------------------------------------------------ token access

    def peek(self) -> Token:
        tok = self.toks[self.pos]
        if tok.kind is NEWLINE and self.depth:
            # Inside brackets a line break is a blank, unless the next line plainly starts
            # a new statement: then a bracket was left open, and stopping here lets the
            # error say so on the right line instead of swallowing the rest of the file.
            p = self.pos
            while self.toks[p].kind is NEWLINE and not self.starts_statement(p + 1):
                p += 1
            self.pos = p
            tok = self.toks[p]
        return tok

    def advance(self) -> Token:
        tok = self.peek()
        if tok.kind is not EOF:
            self.pos += 1
        return tok

    def starts_statement(self, p: int) -> bool:
        """Whether the line whose first token is toks[p] can only be a new statement:
        a declaration keyword and a name, `loss =`, or `name =` (not a keyword argument
        continuing a call from the line before)."""
        tok = self.toks[p]
        if tok.kind is not NAME:
            return False
        nxt = self.toks[p + 1]
        if tok.text in DECLARATIONS:
            return nxt.kind is NAME
        if not nxt.is_op("="):
            return False
        if tok.text in STATEMENT_KEYWORDS:
            return True
        q = p - 1
        while q >= 0 and self.toks[q].kind is NEWLINE:
            q -= 1
        return q < 0 or not self.toks[q].is_op("(", ",")

    def here(self, tok: Token) -> Span:
        """Where to point for a problem at `tok`: at the end of a line or of the file,
        the last token before it, so every caret lies on a character of the file."""
        if tok.kind is not NEWLINE and tok.kind is not EOF:
            return tok.span
        q = min(self.pos, len(self.toks) - 1)
        while q >= 0 and self.toks[q].kind in (NEWLINE, EOF):
            q -= 1
        return self.toks[q].span if q >= 0 else tok.span

    def expect_op(self, op: str, context: str) -> Token:
        tok = self.peek()
        if not tok.is_op(op):
            raise _Fail(f"expected '{op}' {context}, got {describe(tok)}", self.here(tok))
        self.pos += 1
        return tok

    # ------------------------------------------------------------ statements

    def module(self) -> ast.Module:
        stmts = []
        toks = self.toks
        while True:
            self.depth = 0
            tok = toks[self.pos]
            if tok.kind is NEWLINE:
                self.pos += 1
                continue
            if tok.kind is EOF:
                return ast.Module(stmts, self.failed)
            start = self.pos
            try:
                stmt = self.statement()
                self.end_of_statement(stmt)
                stmts.append(stmt)
                if not isinstance(stmt, ast.FuncDef):
                    self.declared.add(getattr(stmt, "name", None))
            except _Fail as e:
                self.record(e, start)
                name = self.defined_name(start)
                if name is not None:
                    self.failed.setdefault(name, self.toks[start].span)
                self.recover(start)

    def defined_name(self, start: int):
        """The name a statement starting at token `start` defines, if it shows."""
        first, second = self.toks[start], self.toks[start + 1]
        if first.kind is NAME and first.text in STATEMENT_KEYWORDS:
            return first.text
        if first.kind is NAME and first.text in ("dim", "input", "param", "hyper", "def",
                                                 "output"):
            return second.text if second.kind is NAME else None
        if first.kind is NAME and second.is_op("="):
            return first.text
        return None

    def record(self, e: _Fail, start: int) -> None:
        # A lexical error between the statement's start and where parsing failed (a
        # dropped '$', a bad number) probably caused this one: report only the first.
        lo = (self.toks[start].span.line, self.toks[start].span.col)
        at = self.toks[min(self.pos, len(self.toks) - 1)].span
        hi = max((at.line, at.col), (e.span.line, e.span.col))
        k = bisect.bisect_left(self.lexical, lo)      # the first lexical error from lo on
        if k == len(self.lexical) or self.lexical[k] > hi:
            self.errors.append((e.message, e.span))

    def recover(self, start: int) -> None:
        """Skip to the next statement: the next line break outside brackets (counted from
        the statement's start), or a line that plainly starts a statement."""
        toks, depth, p = self.toks, 0, start
        while toks[p].kind is not EOF:
            tok = toks[p]
            if tok.kind is NEWLINE:
                if p >= self.pos and (depth <= 0 or self.starts_statement(p + 1)):
                    break
            elif tok.kind is OP:
                if tok.text in "([":
                    depth += 1
                elif tok.text in ")]":
                    depth -= 1
            p += 1
        self.pos = p

    def end_of_statement(self, stmt) -> None:
        tok = self.peek()
        if tok.kind is NEWLINE or tok.kind is EOF:
            return
        msg = f"unexpected {describe(tok)} after the end of the statement"
        if tok.is_op(")", "]"):
            msg = _unmatched(tok)
        elif isinstance(stmt, (ast.Let, ast.LossStmt, ast.PenaltyStmt, ast.OutputStmt)):
            if tok.is_op("="):
                msg += " (to compare, use '==')"
            elif tok.kind is NUMBER or (tok.kind is NAME and tok.text not in KEYWORDS):
                msg += "; is an operator missing?"
        raise _Fail(msg, tok.span)

    def statement(self):
        tok = self.peek()
        if tok.is_op(")", "]"):
            raise _Fail(_unmatched(tok), tok.span)
        if tok.kind is not NAME:
            raise _Fail("expected a statement (a declaration or 'name = expression'), got "
                        f"{describe(tok)}", tok.span)
        nxt = self.toks[self.pos + 1]
        if tok.text in DECLARATIONS and not nxt.is_op("="):
            self.pos += 1
            return getattr(self, tok.text + "_" * (tok.text == "def"))(tok)
        if tok.text == "loss":
            self.pos += 1
            return self.loss(tok)
        if tok.text == "penalty" and nxt.is_op("="):
            self.pos += 1
            return self.penalty(tok)
        return self.binding(tok)

    def check_free(self, tok: Token) -> None:
        """A declaration or binding may not take a reserved name."""
        name = tok.text
        if name in V2_KEYWORDS or name in V2_FUNCTIONS:
            what = "a keyword" if name in V2_KEYWORDS else "a built-in function"
            raise _Fail(f"'{name}' is a reserved word ({what} since version 2 of the "
                        "language) and cannot be used as a name", tok.span)
        if name in KEYWORDS:
            why = "is a keyword"
        elif name in self.functions:
            raise _Fail(f"'{name}' is a built-in function and cannot be redefined", tok.span)
        elif name in INITIALIZERS:
            why = "is reserved (a parameter initializer)"
        elif name in self.reserved:
            why = "is reserved (the keyword argument of reductions)"
        else:
            return
        raise _Fail(f"'{name}' {why} and cannot be used as a name", tok.span)

    def declared_name(self, kw: Token) -> Token:
        tok = self.peek()
        if tok.kind is not NAME:
            raise _Fail(f"expected a name after '{kw.text}', got {describe(tok)}",
                        self.here(tok))
        self.check_free(tok)
        self.pos += 1
        return tok

    def finish(self, kw: Token):
        """The span of a declaration: from its keyword to its last token."""
        return kw.span.to(self.toks[self.pos - 1].span)

    def no_more(self, what: str, allowed: str) -> None:
        """After the name (and shape) of a declaration: only `allowed` may follow."""
        tok = self.peek()
        if tok.kind is not NEWLINE and tok.kind is not EOF and not tok.is_op("="):
            raise _Fail(f"expected {allowed} after {what}, got {describe(tok)}", tok.span)

    def dim(self, kw: Token) -> ast.DimDecl:
        name = self.declared_name(kw)
        self.no_more(f"'dim {name.text}'", "'=' or the end of the line")
        value = None
        if self.peek().is_op("="):
            self.pos += 1
            tok = self.peek()
            if tok.kind is not NUMBER or not tok.is_int:
                got = describe(tok)
                nxt = self.toks[self.pos + 1]
                if tok.is_op("-", "+") and nxt.kind is NUMBER:
                    got = f"'{tok.text}{nxt.text}'"
                raise _Fail(f"dim '{name.text}' must be a positive integer literal, got "
                            f"{got}", self.here(tok))
            self.pos += 1
            value = int(tok.text)
            if value < 1:
                raise _Fail(f"dim '{name.text}' must be positive, got {tok.text}", tok.span)
            if value > INT64_MAX:
                raise _Fail(f"dim '{name.text}' = {tok.text} is too large for a 64-bit size",
                            tok.span)
            self.plain_value(f"the value of dim '{name.text}'")
        return ast.DimDecl(name.text, value, self.finish(kw), name.span)

    def shape(self, name: Token) -> list:
        """`[N, 3]` after a declared name: dims or integer literals; none for a scalar."""
        if not self.peek().is_op("["):
            return []
        opener = self.advance()
        self.open(opener)
        sizes, after = [], opener
        while True:
            tok = self.peek()
            if tok.kind is NUMBER and tok.is_int:
                sizes.append(ast.Num(tok.value, tok.text, True, tok.span))
            elif tok.kind is NAME and tok.text not in self.reserved:
                sizes.append(ast.Name(tok.text, tok.span))
            elif tok.kind is NUMBER:
                raise _Fail(f"a size must be an integer, got '{tok.text}'", tok.span)
            elif tok.is_op("]") and after is opener:
                raise _Fail(f"expected a size after '[' (for a scalar, write no brackets: "
                            f"'{name.text}')", tok.span)
            else:
                raise _Fail(f"expected a size (a dim or an integer literal) after "
                            f"'{after.text}', got {describe(tok)}", self.here(tok))
            self.pos += 1
            tok = self.peek()
            if tok.is_op(","):
                after = self.advance()
            elif tok.is_op("]") or tok.kind is NEWLINE or tok.kind is EOF:
                break
            elif tok.kind is OP and tok.text in _BINARY:
                raise _Fail("a size must be a single dim or integer literal, not an "
                            "expression", tok.span)
            else:
                raise _Fail(f"expected ',' or ']' in the shape of '{name.text}', got "
                            f"{describe(tok)}", tok.span)
        self.close(opener, "]")
        if len(sizes) > 2:
            raise _Fail(f"'{name.text}' has {len(sizes)} axes; values have at most 2 (a "
                        "matrix)", sizes[2].span)
        return sizes

    def input(self, kw: Token) -> ast.InputDecl:
        name = self.declared_name(kw)
        shape = self.shape(name)
        is_int = False
        tok = self.peek()
        if tok.is_op(":"):
            self.pos += 1
            t = self.peek()
            if not (t.kind is NAME and t.text == "int"):
                raise _Fail(f"expected 'int' after ':' (inputs are real unless declared "
                            f"'input {name.text}: int'), got {describe(t)}", self.here(t))
            self.pos += 1
            is_int = True
        elif tok.is_op("="):
            raise _Fail("an input takes no value: its data is passed at call time",
                        tok.span)
        self.no_more(f"input '{name.text}'", "': int' or the end of the line")
        return ast.InputDecl(name.text, shape, is_int, self.finish(kw), name.span)

    def param(self, kw: Token) -> ast.ParamDecl:
        name = self.declared_name(kw)
        shape = self.shape(name)
        self.no_more(f"param '{name.text}'", "'=' (an initial value) or the end of the line")
        init = None
        if self.peek().is_op("="):
            eq = self.advance()
            tok = self.peek()
            if tok.kind is NAME and tok.text in ("normal", "uniform"):
                init = self.random_init(self.advance())
            elif tok.kind is NAME and tok.text == "glorot":
                self.pos += 1
                if self.peek().is_op("("):
                    raise _Fail("'glorot' takes no arguments: write '= glorot'",
                                self.peek().span)
                init = ast.Init("glorot", [], tok.span)
            elif tok.kind is NUMBER or tok.is_op("-", "+") or tok.text == "pi":
                value, span = self.signed_number(eq)
                init = ast.Init("const", [value], span)
                self.plain_value(f"the initial value of '{name.text}'")
            else:
                raise _Fail("expected an initial value after '=': a number, normal(mean, "
                            f"std), uniform(lo, hi) or glorot; got {describe(tok)}",
                            self.here(tok))
        return ast.ParamDecl(name.text, shape, init, self.finish(kw), name.span)

    def random_init(self, func: Token) -> ast.Init:
        """`normal(a, b)` or `uniform(a, b)` with (signed) number arguments; how many
        there are is checked later, with the other semantic rules."""
        opener = self.expect_op("(", f"after '{func.text}'")
        self.open(opener)
        args, after = [], opener
        if not self.peek().is_op(")"):
            while True:
                args.append(self.signed_number(after)[0])
                self.plain_value(f"each argument of {func.text}()")
                if not self.peek().is_op(","):
                    break
                after = self.advance()
        close = self.close(opener, ")")
        return ast.Init(func.text, args, func.span.to(close.span))

    def hyper(self, kw: Token) -> ast.HyperDecl:
        name = self.declared_name(kw)
        shape = self.shape(name)
        tok = self.peek()
        if tok.kind is NEWLINE or tok.kind is EOF:
            example = f"{name.text}{'[...]' if shape else ''} = 0.1"
            raise _Fail(f"hyper '{name.text}' needs a default value, e.g. 'hyper "
                        f"{example}'", self.here(tok))
        if not tok.is_op("="):
            raise _Fail(f"expected '=' after 'hyper {name.text}', got {describe(tok)}",
                        tok.span)
        eq = self.advance()
        if self.peek().is_op("["):
            value, span = self.number_literal(self.advance(), 1)
        else:
            value, span = self.signed_number(eq)
        self.plain_value(f"the default of hyper '{name.text}'")
        return ast.HyperDecl(name.text, value, self.finish(kw), name.span, shape, span)

    def number_literal(self, opener: Token, depth: int) -> tuple[list, Span]:
        """`[1, -2.5]` or `[[1, 2], [3, 4]]` of (signed) numbers: a hyper's default."""
        if depth > 2:
            raise _Fail("literals nest no deeper than a matrix", opener.span)
        self.open(opener)
        items, after = [], opener
        while True:
            if self.peek().is_op("["):
                items.append(self.number_literal(self.advance(), depth + 1)[0])
            else:
                items.append(self.signed_number(after)[0])
            if not self.peek().is_op(","):
                break
            after = self.advance()
        close = self.close(opener, "]")
        return items, opener.span.to(close.span)

    def signed_number(self, after: Token) -> tuple[float, Span]:
        """A number literal or `pi`, with any number of signs in front."""
        tok = self.peek()
        first, sign, prev = tok, 1.0, after
        while tok.is_op("-", "+"):
            if tok.text == "-":
                sign = -sign
            prev = tok
            self.pos += 1
            tok = self.peek()
        if tok.kind is NUMBER:
            value = tok.value
        elif tok.kind is NAME and tok.text == "pi":
            value = math.pi
        else:
            raise _Fail(f"expected a number after '{prev.text}', got "
                        f"{describe(tok)}", self.here(tok))
        self.pos += 1
        return sign * value, first.span.to(tok.span)

    def plain_value(self, what: str) -> None:
        """Declarations take numbers, not expressions: say so at the operator."""
        tok = self.peek()
        if tok.kind is OP and (tok.text in _BINARY or tok.text in "^[("):
            raise _Fail(f"{what} must be a plain number (like 2, -1.5 or 1e-3), not an "
                        "expression", tok.span)

    def loss(self, kw: Token) -> ast.LossStmt:
        eq = self.expect_op("=", "after 'loss'")
        value = self.expression(eq)
        return ast.LossStmt(value, kw.span.to(value.span))

    def output(self, kw: Token) -> ast.OutputStmt:
        name = self.declared_name(kw)
        eq = self.expect_op("=", f"after 'output {name.text}'")
        value = self.expression(eq)
        return ast.OutputStmt(name.text, value, kw.span.to(value.span), name.span)

    def penalty(self, kw: Token) -> ast.PenaltyStmt:
        eq = self.expect_op("=", "after 'penalty'")
        value = self.expression(eq)
        return ast.PenaltyStmt(value, kw.span.to(value.span), kw.span)

    def def_(self, kw: Token) -> ast.FuncDef:
        """`def NAME(a, b, ...) = expr`; the name is callable after this statement."""
        name = self.declared_name(kw)
        opener = self.expect_op("(", f"after 'def {name.text}' (its arguments)")
        self.open(opener)
        args, after = [], opener
        while True:
            tok = self.peek()
            if tok.is_op(")") and after is opener:
                break
            if tok.kind is not NAME:
                raise _Fail(f"expected an argument name after '{after.text}', got "
                            f"{describe(tok)}", self.here(tok))
            self.check_free(tok)
            if any(a.id == tok.text for a in args):
                raise _Fail(f"argument '{tok.text}' is given twice", tok.span)
            self.pos += 1
            args.append(ast.Name(tok.text, tok.span))
            if not self.peek().is_op(","):
                break
            after = self.advance()
        self.close(opener, ")")
        eq = self.expect_op("=", f"after the arguments of '{name.text}'")
        self.in_def = name.text
        try:
            body = self.expression(eq)
        finally:
            self.in_def = None
        if name.text not in self.declared:      # (else the builder reports it)
            self.defined.add(name.text)
        return ast.FuncDef(name.text, args, body, kw.span.to(body.span), name.span)

    def reduce(self, kw: Token) -> ast.ReduceStmt:
        tok = self.peek()
        if not (tok.kind is NAME and tok.text in ("sum", "mean")):
            raise _Fail(f"expected 'sum' or 'mean' after 'reduce', got {describe(tok)}",
                        self.here(tok))
        self.pos += 1
        return ast.ReduceStmt(tok.text, kw.span.to(tok.span))

    def binding(self, name: Token) -> ast.Let:
        self.pos += 1
        eq = self.peek()
        if not eq.is_op("="):
            raise _Fail(f"expected '=' after '{name.text}', got {describe(eq)}: a statement "
                        "is a declaration or 'name = expression'", self.here(eq))
        self.check_free(name)
        self.pos += 1
        value = self.expression(eq)
        return ast.Let(name.text, value, name.span.to(value.span), name.span)

    # ------------------------------------------------------------ brackets

    def open(self, opener: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _Fail(f"expression nested too deeply (more than {MAX_NESTING} levels of "
                        "brackets)", opener.span)

    def close(self, opener: Token, closer: str) -> Token:
        tok = self.peek()
        if tok.is_op(closer):
            self.pos += 1
            self.depth -= 1
            return tok
        where = f"{opener.span.line}:{opener.span.col}"
        if tok.kind is NEWLINE or tok.kind is EOF:
            # the line or the file ended with the bracket open: point at the bracket
            raise _Fail(f"expected '{closer}' to close '{opener.text}' opened at {where}",
                        opener.span)
        if tok.is_op(")", "]"):
            raise _Fail(f"'{tok.text}' does not match '{opener.text}' opened at {where}: "
                        f"expected '{closer}'", tok.span)
        hint = ""
        if tok.kind is NUMBER or tok.is_op("(") or (tok.kind is NAME
                                                    and tok.text not in KEYWORDS):
            hint = "; is an operator or ',' missing?"
        raise _Fail(f"expected '{closer}' to close '{opener.text}' opened at {where}, got "
                    f"{describe(tok)}{hint}", tok.span)

    # ------------------------------------------------------------ expressions

    def expression(self, after: Optional[Token]):
        """A whole expression; `after` is the token before it, for messages."""
        return nested.run(self.subexpression(after))

    def subexpression(self, after: Optional[Token]):
        """The task that parses a whole expression, for a generator below to yield
        where brackets hold one (see lossc/nested.py): `inner = yield
        self.subexpression(opener)`. The methods below are generators; within one
        level of brackets they call each other with `yield from`."""
        return self.binary(0, after)

    def binary(self, min_prec: int, after: Optional[Token]):
        """Operators of precedence >= min_prec, by precedence climbing: each operator's
        right operand takes only tighter operators, so a chain of one level is a loop."""
        tok = self.peek()
        if tok.kind is NAME and tok.text == "not" and min_prec <= _NOT:
            nots = []
            while tok.kind is NAME and tok.text == "not":
                nots.append(tok)
                self.pos += 1
                tok = self.peek()
            # comparisons bind tighter than 'not'
            left = yield from self.binary(_NOT, nots[-1])
            for t in reversed(nots):
                left = ast.Unary("not", left, t.span.to(left.span), t.span)
        else:
            left = yield from self.unary(after)
        compared = False
        while True:
            tok = self.peek()
            prec = _BINARY.get(tok.text) if tok.kind is not NUMBER else None
            if prec is None or prec < min_prec:
                return left
            if prec == _CMP and compared:
                raise _Fail("comparisons cannot be chained: write 'a < b and b < c' "
                            "instead of 'a < b < c'", tok.span)
            self.pos += 1
            right = yield from self.binary(prec + 1, tok)
            left = ast.Binary(tok.text, left, right, left.span.to(right.span), tok.span)
            compared = prec == _CMP

    def unary(self, after: Optional[Token]):
        """Prefix signs (any number), then a power: `-x ^ 2` is `-(x ^ 2)`."""
        tok = self.peek()
        if not tok.is_op("-", "+"):
            return (yield from self.power(after))
        signs = []
        while tok.is_op("-", "+"):
            signs.append(tok)
            self.pos += 1
            tok = self.peek()
        return self.signed(signs, (yield from self.power(signs[-1])))

    @staticmethod
    def signed(signs: list, operand):
        for s in reversed(signs):
            operand = ast.Unary(s.text, operand, s.span.to(operand.span), s.span)
        return operand

    def power(self, after: Optional[Token]):
        """`a ^ b ^ -c ^ d`: right-associative, each exponent a unary expression. The
        operands are collected in a loop and the tree is built from the right."""
        base = yield from self.postfix(after)
        tok = self.peek()
        if not tok.is_op("^"):
            return base
        steps = []                 # (the '^', the signs after it, its postfix operand)
        while tok.is_op("^"):
            self.pos += 1
            signs, prev = [], tok
            t = self.peek()
            while t.is_op("-", "+"):
                signs.append(t)
                prev = t
                self.pos += 1
                t = self.peek()
            steps.append((tok, signs, (yield from self.postfix(prev))))
            tok = self.peek()
        _, signs, acc = steps[-1]
        acc = self.signed(signs, acc)
        for i in range(len(steps) - 2, -1, -1):
            _, signs, operand = steps[i]
            caret = steps[i + 1][0]
            acc = ast.Binary("^", operand, acc, operand.span.to(acc.span), caret.span)
            acc = self.signed(signs, acc)
        return ast.Binary("^", base, acc, base.span.to(acc.span), steps[0][0].span)

    def postfix(self, after: Optional[Token]):
        """A primary followed by any number of indexings: `M[i][j]`, `softmax(z)[1]`."""
        e = yield from self.primary(after)
        while True:
            tok = self.peek()
            if tok.is_op("["):
                e = yield from self.index(e)
            elif tok.is_op("("):
                raise _Fail("only built-in functions can be called (is a '*' missing "
                            "before '('?)", tok.span)
            else:
                return e

    def primary(self, after: Optional[Token]):
        tok = self.peek()
        if tok.kind is NUMBER:
            self.pos += 1
            return ast.Num(tok.value, tok.text, tok.is_int, tok.span)
        if tok.is_op("("):
            return (yield from self.parenthesized(self.advance()))
        if tok.is_op("["):
            return (yield from self.array_literal(self.advance()))
        if tok.kind is not NAME:
            raise self.expected_expression(tok, after)
        name = tok.text
        if name in ("and", "or"):
            raise self.expected_expression(tok, after)
        self.pos += 1
        if name in KEYWORDS and name not in ("where", "pi"):
            raise _Fail(self.keyword_misuse(name), tok.span)
        if self.peek().is_op("("):
            return (yield from self.call(tok))
        if name == "pi":
            return ast.Num(math.pi, "pi", False, tok.span)
        if name in self.callable or name in self.defined:
            args = "cond, a, b" if name == "where" else "..."
            raise _Fail(f"'{name}' is a function: call it as {name}({args})", tok.span)
        if name in INITIALIZERS:
            raise _Fail(f"'{name}' is an initializer: it can only follow '=' in a param "
                        "declaration", tok.span)
        if name == "axis":
            raise _Fail("'axis' can only be a keyword argument, as in sum(M, axis=0)",
                        tok.span)
        return ast.Name(name, tok.span)

    @staticmethod
    def keyword_misuse(name: str) -> str:
        if name == "not":
            return "'not' needs parentheses here: write (not ...)"
        if name == "loss":
            return ("'loss' is a keyword and cannot be referenced; bind the value to a "
                    "name first (z = ...) and use that")
        if name in V2_KEYWORDS:
            return (f"'{name}' is a reserved word (a keyword since version 2 of the "
                    "language) and cannot be used in an expression")
        return f"'{name}' is a keyword and cannot be used in an expression"

    def expected_expression(self, tok: Token, after: Optional[Token]) -> _Fail:
        if after is not None and after.is_op("*") and tok.is_op("*"):
            return _Fail("'**' is not an operator: write a ^ b for a power",
                         after.span.to(tok.span))
        where = f" after '{after.text}'" if after is not None else ""
        span = self.here(tok) if after is None else (
            after.span if tok.kind is NEWLINE or tok.kind is EOF else tok.span)
        return _Fail(f"expected an expression{where}, got {describe(tok)}", span)

    def parenthesized(self, opener: Token):
        self.open(opener)
        inner = yield self.subexpression(opener)
        close = self.close(opener, ")")
        # the parentheses belong to a compound expression's span, for carets
        if isinstance(inner, (ast.Binary, ast.Unary, ast.Call, ast.Index)):
            inner.span = opener.span.to(close.span)
        return inner

    def array_literal(self, opener: Token):
        """`[e1, e2, ...]`; a row of a matrix literal is itself one (the builder checks
        the nesting and the rows' lengths)."""
        self.open(opener)
        if self.peek().is_op("]"):
            raise _Fail("an array literal needs at least one element", self.peek().span)
        items, after = [], opener
        while True:
            items.append((yield self.subexpression(after)))
            if not self.peek().is_op(","):
                break
            after = self.advance()
        close = self.close(opener, "]")
        return ast.ArrayLit(items, opener.span.to(close.span))

    def call(self, func: Token) -> ast.Call:
        name = func.text
        # (a function defined above whose definition failed to parse is called as if
        # it had not: the builder knows it failed and says nothing more)
        failed_above = name in self.defs_later and self.defs_later[name].line < func.span.line
        if name not in self.callable and name not in self.defined and not failed_above:
            if name == self.in_def:
                msg = (f"'{name}' cannot call itself: a function is not defined inside its "
                       "own body (there is no recursion)")
            elif name in self.defs_later:
                msg = (f"function '{name}' is used before it is defined (line "
                       f"{self.defs_later[name].line})")
            elif name == "pi":
                msg = "'pi' is a constant, not a function (is a '*' missing?)"
            elif name in INITIALIZERS:
                msg = (f"{name}(...) is an initializer: it can only follow '=' in a param "
                       "declaration")
            elif name == "axis":
                msg = "'axis' is not a function"
            else:
                guess = closest_name(name, self.callable | self.defined)
                msg = f"unknown function '{name}'" + (
                    f"; did you mean '{guess}'?" if guess
                    else "; only built-in functions can be called")
            raise _Fail(msg, func.span)
        opener = self.advance()
        self.open(opener)
        args, kwargs, after = [], [], opener
        if not self.peek().is_op(")"):
            while True:
                tok = self.peek()
                if tok.kind is NAME and self.toks[self.pos + 1].is_op("="):
                    eq = self.toks[self.pos + 1]
                    self.pos += 2
                    value = yield self.subexpression(eq)
                    kwargs.append(ast.Keyword(tok.text, value, tok.span.to(value.span)))
                else:
                    if kwargs and not tok.is_op(")"):
                        raise _Fail("a positional argument cannot follow a keyword "
                                    "argument", tok.span)
                    args.append((yield self.subexpression(after)))
                if not self.peek().is_op(","):
                    break
                after = self.advance()
        close = self.close(opener, ")")
        return ast.Call(name, args, kwargs, func.span.to(close.span), func.span)

    def index(self, base) -> ast.Index:
        opener = self.advance()
        self.open(opener)
        items, after = [], opener
        while True:
            items.append((yield from self.index_item(after)))
            if not self.peek().is_op(","):
                break
            after = self.advance()
        close = self.close(opener, "]")
        return ast.Index(base, items, base.span.to(close.span))

    def index_item(self, after: Token):
        """An index (an expression) or a slice `lo:hi`, either bound optional."""
        tok = self.peek()
        lo = None
        if tok.is_op("]", ","):
            raise _Fail(f"expected an index or a slice after '{after.text}', got "
                        f"{describe(tok)}", tok.span)
        if not tok.is_op(":"):
            lo = yield self.subexpression(after)
            tok = self.peek()
            if not tok.is_op(":"):
                return lo
        colon = tok
        self.pos += 1
        hi = None
        tok = self.peek()
        if not (tok.is_op(",", "]", ":") or tok.kind is NEWLINE or tok.kind is EOF):
            hi = yield self.subexpression(colon)
            tok = self.peek()
        if tok.is_op(":"):
            raise _Fail("slices have no step: write 'a:b'", tok.span)
        start = lo.span if lo is not None else colon.span
        end = hi.span if hi is not None else colon.span
        return ast.Slice(lo, hi, start.to(end))


# ---------------------------------------------------------------- printing


def to_text(node) -> str:
    """An expression as fully parenthesized text: `-a ^ 2` gives `(-(a ^ 2))`.

    For tests and debugging. Iterative, so a 10,000-term sum prints without
    recursing 10,000 levels."""
    done: list[str] = []
    stack = [(node, False)]
    while stack:
        n, ready = stack.pop()
        kids = _children(n)
        if not ready:
            stack.append((n, True))
            stack.extend((k, False) for k in reversed(kids))
            continue
        parts = done[len(done) - len(kids):] if kids else []
        del done[len(done) - len(kids):]
        done.append(_format(n, parts))
    return done[0]


def _children(n) -> list:
    if isinstance(n, ast.Unary):
        return [n.operand]
    if isinstance(n, ast.Binary):
        return [n.left, n.right]
    if isinstance(n, ast.Call):
        return list(n.args) + [k.value for k in n.kwargs]
    if isinstance(n, ast.Index):
        return [n.base] + list(n.items)
    if isinstance(n, ast.Slice):
        return [b for b in (n.lo, n.hi) if b is not None]
    if isinstance(n, ast.ArrayLit):
        return list(n.elements)
    return []


def _format(n, parts: list[str]) -> str:
    if isinstance(n, ast.Num):
        return n.text
    if isinstance(n, ast.Name):
        return n.id
    if isinstance(n, ast.Unary):
        return f"({n.op} {parts[0]})" if n.op == "not" else f"({n.op}{parts[0]})"
    if isinstance(n, ast.Binary):
        return f"({parts[0]} {n.op} {parts[1]})"
    if isinstance(n, ast.Call):
        k = len(n.args)
        args = parts[:k] + [f"{kw.name}={v}" for kw, v in zip(n.kwargs, parts[k:])]
        return f"{n.func}({', '.join(args)})"
    if isinstance(n, ast.Index):
        return f"{parts[0]}[{', '.join(parts[1:])}]"
    if isinstance(n, ast.ArrayLit):
        return f"[{', '.join(parts)}]"
    if isinstance(n, ast.Slice):
        it = iter(parts)
        lo = next(it) if n.lo is not None else ""
        hi = next(it) if n.hi is not None else ""
        return f"{lo}:{hi}"
    raise TypeError(f"not an expression node: {type(n).__name__}")
