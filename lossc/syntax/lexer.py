"""Source text -> tokens, each with its span.

Newlines are tokens (a statement ends at the end of its line); the parser decides
where they are insignificant (inside brackets). Comments and blanks (space, tab, form
feed) are dropped. A character that starts no token is reported and skipped, so one
stray character does not hide the errors after it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lossc.source import Reporter, Source, Span

KEYWORDS = {"dim", "input", "param", "hyper", "loss", "reduce", "int", "where", "and", "or",
            "not", "pi"}
BUILTIN_FUNCTIONS = {
    "exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "tan", "tanh", "sinh",
    "cosh", "asin", "acos", "atan", "sigmoid", "softplus", "relu", "erf", "square",
    "max", "min", "pow", "atan2", "where", "sum", "mean", "prod", "logsumexp", "norm",
    "dot", "transpose", "outer", "softmax", "log_softmax"}
RESERVED = KEYWORDS | BUILTIN_FUNCTIONS | {"normal", "uniform", "glorot", "axis"}

# longest first, so "<=" wins over "<"
OPERATORS = ["<=", ">=", "==", "!=", "+", "-", "*", "/", "@", "^", "(", ")", "[", "]", ",",
             ":", "=", "<", ">"]

_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLANKS = " \t\f\v"


@dataclass
class Token:
    kind: str      # "name", "number", "op", "newline", "eof"
    text: str
    span: Span
    value: float = 0.0
    is_int: bool = False

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops

    def __repr__(self) -> str:
        return f"{self.kind}:{self.text!r}@{self.span}"


def describe(tok: Token) -> str:
    if tok.kind == "newline":
        return "the end of the line"
    if tok.kind == "eof":
        return "the end of the file"
    return f"'{tok.text}'"


def tokenize(source: Source, reporter: Reporter) -> list[Token]:
    tokens: list[Token] = []
    for lineno, line in enumerate(source.lines, start=1):
        col = 0
        n = len(line)
        while col < n:
            ch = line[col]
            if ch in _BLANKS:
                col += 1
                continue
            if ch == "#":
                break
            start = col + 1
            m = _NUMBER.match(line, col)
            if m and (ch.isdigit() or ch == "."):
                end = m.end()
                if end < n and (line[end].isalnum() or line[end] == "_"):
                    # 1_000, 2x, 1e: a number glued to letters
                    bad = _NAME.match(line, end)
                    stop = bad.end() if bad else end + 1
                    reporter.error(f"invalid number '{line[col:stop]}'",
                                   Span(lineno, start, lineno, stop + 1))
                    col = stop
                    continue
                text = m.group(0)
                value = float(text)
                span = Span(lineno, start, lineno, end + 1)
                if math.isinf(value):
                    reporter.error(f"number {text} is too large (it overflows float64)", span)
                    value = 0.0
                is_int = "." not in text and "e" not in text.lower()
                tokens.append(Token("number", text, span, value, is_int))
                col = end
                continue
            m = _NAME.match(line, col)
            if m:
                tokens.append(Token("name", m.group(0), Span(lineno, start, lineno, m.end() + 1)))
                col = m.end()
                continue
            for op in OPERATORS:
                if line.startswith(op, col):
                    tokens.append(Token("op", op, Span(lineno, start, lineno, start + len(op))))
                    col += len(op)
                    break
            else:
                shown = ch if ch.isprintable() else repr(ch)
                hint = "; did you mean '!='?" if ch == "!" else ""
                reporter.error(f"unexpected character '{shown}'{hint}",
                               Span(lineno, start, lineno, start + 1))
                col += 1
        tokens.append(Token("newline", "\n", Span(lineno, n + 1, lineno, n + 2)))
    last = max(len(source.lines), 1)
    tokens.append(Token("eof", "", Span(last, len(source.line_text(last)) + 1, last,
                                        len(source.line_text(last)) + 2)))
    return tokens
