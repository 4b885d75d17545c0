"""The front end's first stage: lexer (text -> tokens) and parser (tokens -> AST)."""
from lossc.syntax.parser import parse

__all__ = ["parse"]
