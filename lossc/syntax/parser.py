"""Tokens -> AST, by recursive descent. One statement per line.

Precedence, lowest first (each level a method below):
    or  <  and  <  not  <  comparison (not chained)  <  + -  <  * / @  <  unary - +
    <  ^ (right-associative; its right operand is a unary expression)  <  call, index

Binary chains of one level are loops, so a sum of 10,000 terms is no deeper in Python
than a sum of two; parentheses nest by recursion (the compiler driver runs the front end
with room for that) and are refused cleanly beyond MAX_NESTING.

After an error the parser skips to the next statement, so independent mistakes on
different lines are all reported in one run.
"""
from __future__ import annotations

import math
from typing import Optional

from lossc.source import Reporter, Source, Span, closest_name
from lossc.syntax import ast
from lossc.syntax.lexer import BUILTIN_FUNCTIONS, KEYWORDS, RESERVED, Token, describe, tokenize

MAX_NESTING = 5000
STATEMENT_KEYWORDS = {"dim", "input", "param", "hyper", "loss", "reduce"}
_CMP = {"<", "<=", ">", ">=", "==", "!="}


class ParseError(Exception):
    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.message, self.span = message, span


def parse(source: Source, reporter: Reporter) -> ast.Module:
    """Parse a whole file; syntax errors go to `reporter`, the statements that parsed
    are returned."""
    return Parser(tokenize(source, reporter), reporter).module()


class Parser:
    def __init__(self, tokens: list[Token], reporter: Reporter):
        self.toks = tokens
        self.pos = 0
        self.rep = reporter
        self.depth = 0            # open ( and [: newlines inside them are blanks
        self.nesting = 0

    # ------------------------------------------------------------ token access

    def peek(self) -> Token:
        tok = self.toks[self.pos]
        if self.depth and tok.kind == "newline":
            self.skip_newlines()
            tok = self.toks[self.pos]
        return tok

    def skip_newlines(self) -> None:
        """Inside brackets a line break is a blank, unless the next line plainly starts a
        new statement: then the bracket was never closed, and the error says so."""
        while self.toks[self.pos].kind == "newline":
            nxt = self.toks[self.pos + 1]
            if nxt.kind == "name" and nxt.text in STATEMENT_KEYWORDS and nxt.span.col == 1:
                return
            self.pos += 1

    def next(self) -> Token:
        tok = self.peek()
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def expect_op(self, op: str, what: str = "") -> Token:
        tok = self.peek()
        if not tok.is_op(op):
            raise ParseError(f"expected '{op}'{what}, got {describe(tok)}", tok.span)
        return self.next()

    def expect_name(self, what: str) -> Token:
        tok = self.peek()
        if tok.kind != "name":
            raise ParseError(f"expected {what}, got {describe(tok)}", tok.span)
        return self.next()

    # ------------------------------------------------------------ statements

    def module(self) -> ast.Module:
        stmts = []
        while True:
            while self.toks[self.pos].kind == "newline":
                self.pos += 1
            if self.toks[self.pos].kind == "eof":
                break
            try:
                stmts.append(self.statement())
                tok = self.peek()
                if tok.kind not in ("newline", "eof"):
                    raise ParseError(f"unexpected {describe(tok)} after the end of the "
                                     "statement", tok.span)
            except ParseError as e:
                # one report per line: a stray character already reported by the lexer
                # would otherwise be followed by the parser's complaint about what follows
                if not any(d.span.line == e.span.line for d in self.rep.errors):
                    self.rep.error(e.message, e.span)
                self.recover()
        return ast.Module(stmts)

    def recover(self) -> None:
        """Skip to the start of the next line."""
        self.depth = 0
        while self.toks[self.pos].kind not in ("newline", "eof"):
            self.pos += 1

    def statement(self):
        tok = self.peek()
        if tok.kind != "name":
            raise ParseError(f"expected a statement (a declaration or 'name = ...'), got "
                             f"{describe(tok)}", tok.span)
        handler = {"dim": self.dim, "input": self.input, "param": self.param,
                   "hyper": self.hyper, "loss": self.loss, "reduce": self.reduce}.get(tok.text)
        if handler:
            return handler(self.next())
        return self.binding()

    def declared_name(self, what: str) -> Token:
        tok = self.expect_name(f"a name for the {what}")
        self.check_free(tok)
        return tok

    def check_free(self, tok: Token) -> None:
        if tok.text in KEYWORDS:
            raise ParseError(f"'{tok.text}' is a keyword and cannot be used as a name",
                             tok.span)
        if tok.text in BUILTIN_FUNCTIONS:
            raise ParseError(f"'{tok.text}' is a built-in function and cannot be redefined",
                             tok.span)
        if tok.text in RESERVED:
            raise ParseError(f"'{tok.text}' is reserved and cannot be used as a name",
                             tok.span)

    def dim(self, kw: Token) -> ast.DimDecl:
        name = self.declared_name("dim")
        value = None
        if self.peek().is_op("="):
            self.next()
            tok = self.peek()
            if tok.is_op("-", "+") or tok.kind != "number" or not tok.is_int:
                raise ParseError("a dim's value must be a positive integer literal, "
                                 f"got {describe(tok)}", tok.span)
            self.next()
            value = int(tok.text)
            if value < 1:
                raise ParseError(f"a dim must be positive, got {tok.text}", tok.span)
        return ast.DimDecl(name.text, value, kw.span.to(self.toks[self.pos - 1].span),
                           name.span)

    def sizes(self) -> list:
        out = []
        if not self.peek().is_op("["):
            return out
        self.depth += 1
        self.next()
        while True:
            tok = self.next()
            if tok.kind == "number":
                out.append(ast.Num(tok.value, tok.text, tok.is_int, tok.span))
            elif tok.kind == "name":
                out.append(ast.Name(tok.text, tok.span))
            else:
                raise ParseError(f"expected a size (a dim or an integer), got {describe(tok)}",
                                 tok.span)
            sep = self.next()
            if sep.is_op("]"):
                break
            if not sep.is_op(","):
                raise ParseError(f"expected ',' or ']' in the shape, got {describe(sep)}",
                                 sep.span)
        self.depth -= 1
        if len(out) > 2:
            raise ParseError("values have at most 2 axes (a matrix)", out[2].span)
        return out

    def input(self, kw: Token) -> ast.InputDecl:
        name = self.declared_name("input")
        shape = self.sizes()
        is_int = False
        if self.peek().is_op(":"):
            self.next()
            t = self.expect_name("'int' after ':'")
            if t.text != "int":
                raise ParseError(f"expected 'int' after ':', got '{t.text}'", t.span)
            is_int = True
        return ast.InputDecl(name.text, shape, is_int, kw.span.to(self.toks[self.pos - 1].span),
                             name.span)

    def signed_number(self) -> tuple[float, Span]:
        tok = self.next()
        sign, start = 1.0, tok.span
        while tok.is_op("-", "+"):
            sign = -sign if tok.text == "-" else sign
            tok = self.next()
        if tok.kind == "name" and tok.text == "pi":
            return sign * math.pi, start.to(tok.span)
        if tok.kind != "number":
            raise ParseError(f"expected a number, got {describe(tok)}", tok.span)
        return sign * tok.value, start.to(tok.span)

    def param(self, kw: Token) -> ast.ParamDecl:
        name = self.declared_name("parameter")
        shape = self.sizes()
        init = None
        if self.peek().is_op("="):
            self.next()
            tok = self.peek()
            if tok.kind == "name" and tok.text in ("normal", "uniform"):
                self.next()
                self.expect_op("(", f" after '{tok.text}'")
                self.depth += 1
                args = [self.signed_number()[0]]
                while self.peek().is_op(","):
                    self.next()
                    args.append(self.signed_number()[0])
                self.depth -= 1
                close = self.expect_op(")", f" to close '{tok.text}('")
                init = ast.Init(tok.text, args, tok.span.to(close.span))
            elif tok.kind == "name" and tok.text == "glorot":
                self.next()
                init = ast.Init("glorot", [], tok.span)
            else:
                value, span = self.signed_number()
                init = ast.Init("const", [value], span)
        return ast.ParamDecl(name.text, shape, init, kw.span.to(self.toks[self.pos - 1].span),
                             name.span)

    def hyper(self, kw: Token) -> ast.HyperDecl:
        name = self.declared_name("hyperparameter")
        if not self.peek().is_op("="):
            raise ParseError(f"hyper '{name.text}' needs a default value: "
                             f"hyper {name.text} = 0.1", self.peek().span)
        self.next()
        value, span = self.signed_number()
        return ast.HyperDecl(name.text, value, kw.span.to(span), name.span)

    def loss(self, kw: Token) -> ast.LossStmt:
        self.expect_op("=", " after 'loss'")
        value = self.expression()
        return ast.LossStmt(value, kw.span.to(value.span))

    def reduce(self, kw: Token) -> ast.ReduceStmt:
        tok = self.expect_name("'sum' or 'mean' after 'reduce'")
        if tok.text not in ("sum", "mean"):
            raise ParseError(f"expected 'sum' or 'mean' after 'reduce', got '{tok.text}'",
                             tok.span)
        return ast.ReduceStmt(tok.text, kw.span.to(tok.span))

    def binding(self) -> ast.Let:
        name = self.next()
        if not self.peek().is_op("="):
            raise ParseError(f"expected '=' after '{name.text}' (a statement is a declaration "
                             f"or 'name = expression'), got {describe(self.peek())}",
                             self.peek().span)
        self.check_free(name)
        self.next()
        value = self.expression()
        return ast.Let(name.text, value, name.span.to(value.span), name.span)

    # ------------------------------------------------------------ expressions

    def expression(self):
        return self.or_expr()

    def _chain(self, ops: set, operand):
        left = operand()
        while self.peek().kind in ("op", "name") and self.peek().text in ops:
            op = self.next()
            right = operand()
            left = ast.Binary(op.text, left, right, left.span.to(right.span), op.span)
        return left

    def or_expr(self):
        return self._chain({"or"}, self.and_expr)

    def and_expr(self):
        return self._chain({"and"}, self.not_expr)

    def not_expr(self):
        tok = self.peek()
        if tok.kind == "name" and tok.text == "not":
            self.next()
            operand = self.not_expr()
            return ast.Unary("not", operand, tok.span.to(operand.span), tok.span)
        return self.comparison()

    def comparison(self):
        left = self.additive()
        tok = self.peek()
        if tok.kind == "op" and tok.text in _CMP:
            self.next()
            right = self.additive()
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text in _CMP:
                raise ParseError("comparisons cannot be chained: write (a < b) and (b < c)",
                                 nxt.span)
            return ast.Binary(tok.text, left, right, left.span.to(right.span), tok.span)
        return left

    def additive(self):
        return self._chain({"+", "-"}, self.multiplicative)

    def multiplicative(self):
        return self._chain({"*", "/", "@"}, self.unary)

    def unary(self):
        tok = self.peek()
        if tok.is_op("-", "+"):
            self.next()
            operand = self.unary()
            return ast.Unary(tok.text, operand, tok.span.to(operand.span), tok.span)
        return self.power()

    def power(self):
        base = self.postfix()
        tok = self.peek()
        if tok.is_op("^"):
            self.next()
            exponent = self.unary()    # right-associative, and may carry a sign
            return ast.Binary("^", base, exponent, base.span.to(exponent.span), tok.span)
        return base

    def postfix(self):
        e = self.primary()
        while True:
            tok = self.toks[self.pos]   # no newline skipping: `f\n(x)` is two lines
            if tok.is_op("["):
                e = self.index(e)
            elif tok.is_op("("):
                raise ParseError("only built-in functions can be called", tok.span)
            else:
                return e

    def primary(self):
        tok = self.next()
        if tok.kind == "number":
            return ast.Num(tok.value, tok.text, tok.is_int, tok.span)
        if tok.kind == "name":
            if tok.text == "pi":
                return ast.Num(math.pi, "pi", False, tok.span)
            if self.toks[self.pos].is_op("("):
                return self.call(tok)
            if tok.text in BUILTIN_FUNCTIONS:
                raise ParseError(f"'{tok.text}' is a function: call it as {tok.text}(...)",
                                 tok.span)
            if tok.text in KEYWORDS or tok.text in RESERVED:
                raise ParseError(f"'{tok.text}' is a keyword and cannot be used here",
                                 tok.span)
            return ast.Name(tok.text, tok.span)
        if tok.is_op("("):
            return self.parenthesized(tok)
        if tok.kind in ("newline", "eof"):
            raise ParseError("expected an expression, got " + describe(tok), tok.span)
        raise ParseError(f"expected an expression, got {describe(tok)}", tok.span)

    def nest(self, opener: Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ParseError(f"expression nested too deeply (more than {MAX_NESTING} "
                             "levels)", opener.span)

    def closing(self, opener: Token, close: str) -> Token:
        tok = self.peek()
        if not tok.is_op(close):
            where = f"{opener.span.line}:{opener.span.col}"
            if tok.kind in ("newline", "eof") or (tok.kind == "name" and tok.span.col == 1):
                raise ParseError(f"expected '{close}' to close '{opener.text}' opened at {where}",
                                 opener.span)
            raise ParseError(f"expected '{close}' to close '{opener.text}' opened at {where}, "
                             f"got {describe(tok)}", tok.span)
        return self.next()

    def parenthesized(self, opener: Token):
        self.nest(opener)
        self.depth += 1
        inner = self.expression()
        close = self.closing(opener, ")")
        self.depth -= 1
        self.nesting -= 1
        # the parentheses belong to the expression's span, for carets
        if isinstance(inner, (ast.Binary, ast.Unary, ast.Call, ast.Index)):
            inner.span = opener.span.to(close.span)
        return inner

    def call(self, name: Token):
        if name.text not in BUILTIN_FUNCTIONS:
            guess = closest_name(name.text, BUILTIN_FUNCTIONS)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise ParseError(f"unknown function '{name.text}'{hint}", name.span)
        opener = self.next()
        self.nest(opener)
        self.depth += 1
        args, kwargs = [], []
        if not self.peek().is_op(")"):
            while True:
                tok = self.peek()
                if tok.kind == "name" and self.toks[self.pos + 1].is_op("="):
                    self.next()
                    self.next()
                    value = self.expression()
                    kwargs.append(ast.Keyword(tok.text, value, tok.span.to(value.span)))
                else:
                    if kwargs:
                        raise ParseError("a positional argument cannot follow a keyword "
                                         "argument", tok.span)
                    args.append(self.expression())
                if not self.peek().is_op(","):
                    break
                self.next()
        close = self.closing(opener, ")")
        self.depth -= 1
        self.nesting -= 1
        return ast.Call(name.text, args, kwargs, name.span.to(close.span), name.span)

    def index(self, base):
        opener = self.next()
        self.nest(opener)
        self.depth += 1
        items = []
        while True:
            items.append(self.index_item())
            if not self.peek().is_op(","):
                break
            self.next()
        close = self.closing(opener, "]")
        self.depth -= 1
        self.nesting -= 1
        return ast.Index(base, items, base.span.to(close.span))

    def index_item(self):
        tok = self.peek()
        lo: Optional[object] = None
        if not tok.is_op(":"):
            lo = self.expression()
            if not self.peek().is_op(":"):
                return lo
        colon = self.next()
        hi = None
        if not (self.peek().is_op(",") or self.peek().is_op("]")):
            hi = self.expression()
        start = lo.span if lo is not None else colon.span
        end = hi.span if hi is not None else colon.span
        return ast.Slice(lo, hi, start.to(end))
