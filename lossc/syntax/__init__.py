"""The front end's first stage: lexer (text -> tokens) and parser (tokens -> AST).

    module = parse(source, reporter)   # syntax errors go to reporter; never raises
"""
from lossc.syntax.parser import parse, to_text

__all__ = ["parse", "to_text"]
