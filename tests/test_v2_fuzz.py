"""Version 2 programs mutated at random never crash the compiler: each compiles, or is
refused with a CompileError whose positions lie inside the file (never another
exception). The mutations splice the tokens version 2 adds (def, penalty, output,
literals, int vector inputs, the special functions) into the shared conformance
models, whole statements included."""
import random

import pytest

import lossc
from conftest import SHARED
from lossc.compiler import compile_source
from lossc.source import Source

SOURCES = sorted((SHARED / "conformance-v2").glob("*.loss"))
PIECES = ["def", "penalty", "output", "[", "]", "[[", "]]", ",", "(", ")", "=", "+", "*",
          "^", "@", "lgamma(", "digamma(", "erfc(", "xlogy(", "log_sigmoid(", "tok", "x",
          "w", "1", "-2.5", "sum(", "axis=0", ":", "int", "\n", "input tok[L]: int\n",
          "def f(a, b) = a * b\n", "penalty = sum(w ^ 2)\n", "output o = x\n",
          "hyper h[2] = [1, 2]\n", "f(", "h[", "z = [w, 1]\n", "loss = f(w, w)\n"]


def _mutate(text: str, rng: random.Random) -> str:
    tokens = text.replace("(", " ( ").replace(")", " ) ").replace("[", " [ ") \
        .replace("]", " ] ").replace(",", " , ").split(" ")
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(tokens))
        what = rng.random()
        if what < 0.4:
            tokens[k] = rng.choice(PIECES)
        elif what < 0.7:
            tokens.insert(k, rng.choice(PIECES))
        else:
            del tokens[k]
    return " ".join(tokens)


@pytest.mark.parametrize("seed", range(2))
def test_mutated_version_2_programs_never_crash_the_compiler(seed):
    """The front end and the passes on every program; the code generation and LLVM on
    those that get through them."""
    rng = random.Random(seed)
    compiled = refused = 0
    for _ in range(200):
        text = _mutate(rng.choice(SOURCES).read_text(), rng)
        try:
            compile_source(text)
        except lossc.CompileError as e:
            refused += 1
            src = Source(text)
            for d in e.diagnostics:
                assert 1 <= d.span.line <= len(src.lines), (text, d.message)
                assert 1 <= d.span.col <= max(1, len(src.line_text(d.span.line))), (text, d)
            continue
        except Exception as e:        # anything else is a crash of the compiler
            raise AssertionError(f"{type(e).__name__}: {e}\n--- program:\n{text}") from e
        try:
            lossc.compile(text, cache=False)
        except Exception as e:
            raise AssertionError(f"{type(e).__name__}: {e}\n--- program:\n{text}") from e
        compiled += 1
    assert refused > 0 and compiled > 0
