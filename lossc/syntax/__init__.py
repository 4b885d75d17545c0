"""The front end's first stage: lexer (text -> tokens) and parser (tokens -> AST).

    module = parse(source, reporter, functions)

Syntax errors go to reporter (parse never raises); `functions` are the names of the
language's built-in functions (lossc/ir/build.py FUNCTIONS, from the op table).
"""
from lossc.syntax.parser import parse, to_text

__all__ = ["parse", "to_text"]
