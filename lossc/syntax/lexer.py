"""Source text -> tokens, each with its span.

Line breaks are tokens, because a statement ends at the end of its line; the parser
decides when they are blanks (inside brackets). Comments and blanks (space, tab, form
feed) are dropped. Columns are 1-based and count code points, like every `Span`.

The lexer never stops at a mistake: it records it and carries on, so one stray
character does not hide the errors after it. A malformed number still yields a number
token (with a stand-in value), so the parser does not add a second complaint about the
same spot.
"""
from __future__ import annotations

import re

from lossc.source import Source, Span

# version 2 reserves three more keywords and the names of its new functions: a version 1
# program that used one as a name gets an error saying the word is reserved
V2_KEYWORDS = frozenset({"def", "penalty", "output"})
V2_FUNCTIONS = frozenset({"lgamma", "digamma", "erfc", "xlogy", "log_sigmoid"})
KEYWORDS = frozenset({
    "dim", "input", "param", "hyper", "loss", "reduce", "int", "where", "and", "or",
    "not", "pi"}) | V2_KEYWORDS
INITIALIZERS = frozenset({"normal", "uniform", "glorot"})
# (the built-in functions are the op table's: the parser is given their names)

# token kinds (compared by identity in the parser)
NAME, NUMBER, OP, NEWLINE, EOF = "name", "number", "op", "newline", "eof"

# One pattern for everything that can start at a given column. ASCII only: `\d` must not
# accept other scripts' digits, nor names other letters. Two-character operators come
# first so that `<=` is one token, not `<` then `=`.
_TOKEN = re.compile(r"""
      (?P<blank>[ \t\f]+)
    | (?P<comment>\#.*)
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|==|!=|[-+*/@^()\[\],:=<>])
""", re.VERBOSE | re.ASCII)
# what may be glued to a number by mistake: `1_000`, `2x`, `1e`, `1.5.3`, `1e+x`
_GLUED = re.compile(r"(?:[eE][+-]|[A-Za-z0-9_.])+", re.ASCII)
# hints for characters people type by habit from other languages
_HINTS = {"!": "; use '!=' to compare, 'not' to negate", "&": "; use 'and'",
          "|": "; use 'or'", "%": "; there is no remainder operator",
          ";": "; a statement ends at the end of its line",
          "{": "; use ( ) to group and [ ] to index"}


class Token:
    __slots__ = ("kind", "text", "span", "value", "is_int")

    def __init__(self, kind: str, text: str, span: Span, value: float = 0.0,
                 is_int: bool = False):
        self.kind, self.text, self.span = kind, text, span
        self.value, self.is_int = value, is_int

    def is_op(self, *ops: str) -> bool:
        return self.kind is OP and self.text in ops

    def __repr__(self) -> str:
        return f"{self.kind}:{self.text!r}@{self.span}"


def describe(tok: Token) -> str:
    """A token as an error message names it."""
    if tok.kind is NEWLINE:
        return "the end of the line"
    if tok.kind is EOF:
        return "the end of the file"
    return f"'{tok.text}'"


def _show(ch: str) -> str:
    return f"'{ch}'" if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"


def tokenize(source: Source) -> tuple[list[Token], list[tuple[str, Span]]]:
    """All tokens of the file, ending with EOF, and the lexical errors as
    (message, span) pairs in source order. Every line ends with a NEWLINE token."""
    tokens: list[Token] = []
    errors: list[tuple[str, Span]] = []
    for lineno, line in enumerate(source.lines, start=1):
        col, n = 0, len(line)
        while col < n:
            m = _TOKEN.match(line, col)
            if m is None:
                col = _bad_characters(line, lineno, col, errors)
                continue
            kind, end = m.lastgroup, m.end()
            if kind == "number":
                glued = _GLUED.match(line, end)
                if glued:
                    end = glued.end()
                tokens.append(_number(line[col:end], Span(lineno, col + 1, lineno, end + 1),
                                      bool(glued), errors))
            elif kind == "name":
                tokens.append(Token(NAME, m.group(), Span(lineno, col + 1, lineno, end + 1)))
            elif kind == "op":
                tokens.append(Token(OP, m.group(), Span(lineno, col + 1, lineno, end + 1)))
            col = end                                   # blanks and comments: nothing
        tokens.append(Token(NEWLINE, "\n", Span(lineno, n + 1, lineno, n + 2)))
    # the end of the file sits just after the last line that holds something
    last = source.last_line
    n = len(source.line_text(last).rstrip())
    tokens.append(Token(EOF, "", Span(last, n + 1, last, n + 2)))
    return tokens, errors


def _bad_characters(line: str, lineno: int, col: int, errors: list) -> int:
    """Report a run of characters that start no token (one error per run, not per
    character) and return the column after it."""
    ch = line[col]
    if ch in "'\"":
        # a string, most likely: one error for all of it
        close = line.find(ch, col + 1)
        end = close + 1 if close > 0 else len(line)
        errors.append((f"unexpected string {line[col:end]}: there are no strings",
                       Span(lineno, col + 1, lineno, end + 1)))
        return end
    end = col + 1
    while end < len(line) and _TOKEN.match(line, end) is None:
        end += 1
    bad = line[col:end]
    span = Span(lineno, col + 1, lineno, end + 1)
    if ch.isspace():
        msg = (f"unexpected whitespace character {_show(ch)}: only space, tab and form "
               "feed are blanks")
    elif len(set(bad)) == 1:
        msg = f"unexpected character {_show(ch)}" + _HINTS.get(ch, "")
    else:
        shown = f"'{bad}'" if bad.isprintable() else " ".join(_show(c) for c in bad)
        msg = f"unexpected characters {shown}"
    if any(c.isalpha() for c in bad):
        msg += " (names use only ASCII letters, digits and '_')"
    errors.append((msg, span))
    return end


def _number(text: str, span: Span, glued: bool, errors: list) -> Token:
    """A number token. A malformed or overflowing literal is reported and gets a
    stand-in value, so later stages do not complain about it again."""
    is_int = not any(c in text for c in ".eE")
    if glued:
        if "_" in text and re.fullmatch(r"[0-9_.eE+-]+", text):
            why = "digits cannot be separated by '_'"
        elif re.fullmatch(r"[0-9.]+[eE][+-]?", text):
            why = "the exponent has no digits"
        elif re.fullmatch(r"\d+[A-Za-z_]\w*", text, re.ASCII):
            digits = re.match(r"\d+", text).group()
            why = f"for a product write '{digits} * {text[len(digits):]}'"
        else:
            why = ""
        errors.append((f"invalid number '{text}'" + (f": {why}" if why else ""), span))
        try:
            value = float(text)    # accepts 1_000, so a dim so written keeps its value
        except ValueError:
            value = 1.0
        return _stand_in(value if value < float("inf") else 1.0, is_int, span)
    value = float(text)
    if value == float("inf"):
        errors.append((f"number '{text}' is too large: it overflows float64", span))
        return _stand_in(1.0, is_int, span)
    return Token(NUMBER, text, span, value, is_int)


def _stand_in(value: float, is_int: bool, span: Span) -> Token:
    """A well-formed token in place of a reported bad literal: later stages read `text`
    (int(text) for integers), so it must be a valid number too."""
    text = str(int(value)) if is_int else repr(value)
    return Token(NUMBER, text, span, float(text), is_int)
