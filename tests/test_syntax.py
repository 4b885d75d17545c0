"""The lexer and parser on their own: what parses to what, which mistakes are syntax
errors (with their positions and wording), recovery after errors, and program size."""
import json
import math
import random
import sys
from pathlib import Path

import pytest

import lossc
from lossc.source import Reporter, Source
from lossc.syntax import ast, parse
from lossc.ir.build import FUNCTIONS
from lossc.syntax.lexer import INITIALIZERS, KEYWORDS, V2_FUNCTIONS, V2_KEYWORDS, tokenize
from lossc.syntax.parser import MAX_NESTING, to_text

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
EXPECTED_ERRORS = json.loads((CONFORMANCE / "errors" / "expected.json").read_text())
SYNTACTIC_CASES = {"bad_token.loss", "unclosed_paren.loss"}


def run(text):
    """Parse `text`; the module and the errors as (line, col, message)."""
    src = Source(text)
    rep = Reporter(src)
    module = parse(src, rep, FUNCTIONS)
    return module, [(d.span.line, d.span.col, d.message) for d in rep.errors]


def parse_ok(text):
    module, errors = run(text)
    assert errors == []
    return module.statements


def expr(text):
    """The loss expression of `loss = text`, fully parenthesized."""
    (stmt,) = parse_ok("loss = " + text)
    return to_text(stmt.value)


def first_error(text):
    _, errors = run(text)
    assert errors, f"no error for {text!r}"
    return errors[0]


# ---------------------------------------------------------------- the shared cases


def test_every_conformance_model_parses():
    files = sorted(CONFORMANCE.glob("*.loss"))
    assert len(files) >= 20
    for f in files:
        stmts = parse_ok(f.read_text())
        assert sum(isinstance(s, ast.LossStmt) for s in stmts) == 1, f.name


@pytest.mark.parametrize("name", sorted(k for k in EXPECTED_ERRORS if not k.startswith("_")))
def test_conformance_error_cases(name):
    """The lexical/syntactic cases fail here at the expected spot; the others are
    semantic (arity, names, shapes) and must parse cleanly for the later stage."""
    exp = EXPECTED_ERRORS[name]
    module, errors = run((CONFORMANCE / "errors" / name).read_text())
    if name not in SYNTACTIC_CASES:
        assert errors == [] and module.statements
        return
    line, col, message = errors[0]
    assert line == exp["line"]
    if "cols" in exp:
        assert exp["cols"][0] <= col <= exp["cols"][1]
    for word in exp["contains"]:
        assert word.lower() in message.lower()


def test_bad_token_and_unclosed_paren_details():
    assert first_error("param w = 1\nloss = w $ 2\n") == (2, 10, "unexpected character '$'")
    assert first_error("param w = 1\nloss = (w + 2 * 3\n") == (
        2, 8, "expected ')' to close '(' opened at 2:8")


# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize("text, tree", [
    ("-a ^ 2", "(-(a ^ 2))"),
    ("a ^ b ^ c", "(a ^ (b ^ c))"),
    ("x ^ -y ^ 2", "(x ^ (-(y ^ 2)))"),
    ("x ^ -1", "(x ^ (-1))"),
    ("a * b / c", "((a * b) / c)"),
    ("a - b - c", "((a - b) - c)"),
    ("a @ b * c", "((a @ b) * c)"),
    ("a + b * c ^ d", "(a + (b * (c ^ d)))"),
    ("- -x", "(-(-x))"),
    ("+-x", "(+(-x))"),
    ("-a * b", "((-a) * b)"),
    ("not a < b and c", "((not (a < b)) and c)"),
    ("a or b and c", "(a or (b and c))"),
    ("not not a or b", "((not (not a)) or b)"),
    ("a + b < c * d", "((a + b) < (c * d))"),
    ("(a + b) * c", "((a + b) * c)"),
    ("(a < b) < c", "((a < b) < c)"),
    ("M[i][j] + v[1:3]", "(M[i][j] + v[1:3])"),
    ("softmax(z)[1] ^ 2", "(softmax(z)[1] ^ 2)"),
    ("(a + b)[0]", "(a + b)[0]"),
    ("M[:, j] + M[a:, :b]", "(M[:, j] + M[a:, :b])"),
    ("v[-1] + v[N - 1 - k]", "(v[(-1)] + v[((N - 1) - k)])"),
    ("sum(M, axis=1) * where(x > 0, x, -x)", "(sum(M, axis=1) * where((x > 0), x, (-x)))"),
    ("pi * e + inf - nan + _", "((((pi * e) + inf) - nan) + _)"),
    ("a == b", "(a == b)"), ("a != b", "(a != b)"), ("a <= b", "(a <= b)"),
])
def test_precedence_and_associativity(text, tree):
    assert expr(text) == tree


def test_node_kinds_and_spans():
    (stmt,) = parse_ok("loss = -x ^ 2 + f2")
    add = stmt.value
    assert isinstance(add, ast.Binary) and add.op == "+"
    assert (add.op_span.line, add.op_span.col, add.op_span.end_col) == (1, 15, 16)
    assert (add.span.col, add.span.end_col) == (8, 19)
    neg = add.left
    assert isinstance(neg, ast.Unary) and neg.op == "-" and neg.op_span.col == 8
    assert isinstance(neg.operand, ast.Binary) and neg.operand.op == "^"
    assert neg.operand.op_span.col == 11
    assert isinstance(add.right, ast.Name) and add.right.id == "f2"
    # parentheses belong to the span of what they enclose
    (stmt,) = parse_ok("loss = (a + b) * c")
    assert stmt.value.left.span.col == 8 and stmt.value.left.span.end_col == 15


def test_calls_and_indexing_nodes():
    (stmt,) = parse_ok("loss = where(c, a, b)[0] + sum(M, axis=0)[1:]")
    left, right = stmt.value.left, stmt.value.right
    assert isinstance(left, ast.Index) and isinstance(left.base, ast.Call)
    assert left.base.func == "where" and len(left.base.args) == 3
    assert left.base.func_span.col == 8
    assert isinstance(right, ast.Index)
    (item,) = right.items
    assert isinstance(item, ast.Slice) and item.lo.value == 1 and item.hi is None
    call = right.base
    assert call.func == "sum" and len(call.args) == 1
    (kw,) = call.kwargs
    assert kw.name == "axis" and kw.value.value == 0 and kw.value.is_int
    # arity is not the parser's business
    (stmt,) = parse_ok("loss = exp(w, 2) + dot()")
    assert len(stmt.value.left.args) == 2 and stmt.value.right.args == []


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("text, value, is_int", [
    ("3", 3.0, True), ("007", 7.0, True), ("2.", 2.0, False), (".5", 0.5, False),
    ("2.5", 2.5, False), ("1e-3", 1e-3, False), ("1e+3", 1000.0, False),
    ("6.02E23", 6.02e23, False), ("1e308", 1e308, False),
])
def test_number_literals(text, value, is_int):
    (stmt,) = parse_ok(f"loss = {text}")
    num = stmt.value
    assert isinstance(num, ast.Num)
    assert (num.value, num.is_int, num.text) == (value, is_int, text)


def test_pi_is_a_number():
    (stmt,) = parse_ok("loss = pi")
    assert isinstance(stmt.value, ast.Num)
    assert (stmt.value.value, stmt.value.text, stmt.value.is_int) == (math.pi, "pi", False)


@pytest.mark.parametrize("text, col, words", [
    ("loss = 1_000", 8, ["1_000", "'_'"]),
    ("loss = 1e400", 8, ["1e400", "overflows float64"]),
    ("loss = 2 * 1e", 12, ["1e", "exponent"]),
    ("loss = 2x", 8, ["2x", "2 * x"]),
    ("loss = 1.5.3", 8, ["1.5.3"]),
])
def test_bad_numbers(text, col, words):
    module, errors = run(text)
    assert len(errors) == 1            # no second complaint about the same literal
    line, c, message = errors[0]
    assert (line, c) == (1, col)
    assert all(w in message for w in words)
    assert len(module.statements) == 1  # the statement survives with a stand-in value


def test_a_dim_written_with_underscores_keeps_its_value():
    module, errors = run("dim N = 1_000\nloss = 1")
    assert len(errors) == 1 and module.statements[0].value == 1000


# ---------------------------------------------------------------- names and keywords


def test_keyword_sets():
    assert KEYWORDS == {"dim", "input", "param", "hyper", "loss", "reduce", "int", "where",
                        "and", "or", "not", "pi", "def", "penalty", "output"}
    functions = FUNCTIONS - KEYWORDS
    assert {"exp", "log_softmax", "logsumexp", "atan2", "square", "log_sigmoid", "lgamma",
            "digamma", "erfc", "xlogy"} <= functions
    assert len(functions) == 39
    assert INITIALIZERS == {"normal", "uniform", "glorot"}


@pytest.mark.parametrize("name", sorted(FUNCTIONS - KEYWORDS - V2_FUNCTIONS))
def test_every_built_in_function_is_reserved(name):
    """The parser is given the op table's function names: each is callable and no
    binding may take it."""
    _, errors = run(f"{name} = 1\nloss = 1\n")
    assert errors == [(1, 1, f"'{name}' is a built-in function and cannot be redefined")]


@pytest.mark.parametrize("name", sorted(V2_KEYWORDS | V2_FUNCTIONS))
@pytest.mark.parametrize("form, col", [("input {} = 1", 7), ("param {}", 7), ("hyper {} = 1", 7),
                                       ("dim {} = 2", 5), ("{} = 1", 1)])
def test_version_2_words_are_reserved(name, form, col):
    """A version 1 program using a word version 2 reserves as a name: an error saying
    the word is reserved (`penalty = 1` is version 2's penalty statement)."""
    if form == "{} = 1" and name == "penalty":
        return
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(form.format(name) + "\nloss = 1\n")
    assert (info.value.line, info.value.col) == (1, col), str(info.value)
    assert f"'{name}' is a reserved word" in info.value.message


@pytest.mark.parametrize("name", sorted(V2_KEYWORDS))
def test_version_2_keywords_cannot_be_referenced(name):
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(f"param w\nloss = w + {name}\n")
    assert (info.value.line, info.value.col) == (2, 12), str(info.value)
    assert f"'{name}' is a reserved word" in info.value.message


def test_ordinary_names():
    stmts = parse_ok("param e = 1\ninput inf\nhyper nan = 2\n_ = e + inf\nloss = _ * nan")
    assert [s.name for s in stmts[:4]] == ["e", "inf", "nan", "_"]


@pytest.mark.parametrize("text, col, message", [
    ("exp = 3", 1, "'exp' is a built-in function and cannot be redefined"),
    ("param sum = 1", 7, "'sum' is a built-in function and cannot be redefined"),
    ("dim loss = 3", 5, "'loss' is a keyword and cannot be used as a name"),
    ("pi = 3", 1, "'pi' is a keyword and cannot be used as a name"),
    ("input where", 7, "'where' is a keyword and cannot be used as a name"),
    ("hyper normal = 1", 7, "'normal' is reserved (a parameter initializer) and cannot be "
                            "used as a name"),
    ("axis = 1", 1, "'axis' is reserved (the keyword argument of reductions) and cannot be "
                    "used as a name"),
    ("reduce = 1", 1, "'reduce' is a keyword and cannot be used as a name"),
])
def test_reserved_names_cannot_be_declared(text, col, message):
    assert first_error(text) == (1, col, message)


@pytest.mark.parametrize("text, col, words", [
    ("loss = f(x)", 8, ["unknown function 'f'", "only built-in functions"]),
    ("loss = sume(x)", 8, ["unknown function 'sume'", "did you mean 'sum'?"]),
    ("loss = 2(x)", 9, ["only built-in functions can be called"]),
    ("loss = exp", 8, ["'exp' is a function"]),
    ("z = loss + 1", 5, ["'loss' is a keyword and cannot be referenced"]),
    ("loss = normal(0, 1)", 8, ["initializer"]),
    ("loss = a < not b", 12, ["'not' needs parentheses"]),
])
def test_misused_names_in_expressions(text, col, words):
    line, c, message = first_error(text)
    assert (line, c) == (1, col)
    assert all(w in message for w in words)


# ---------------------------------------------------------------- statements


def test_declarations():
    stmts = parse_ok(
        "dim N = 16\ndim K\ninput x[N, K]\ninput y\ninput k: int\n"
        "param W[N, 3] = normal(0, 0.1)\nparam u = uniform(-1, +1)\nparam G[N, K] = glorot\n"
        "param c = -1.5\nparam b\nhyper lam = 1e-3\nhyper h = -pi\nz = b * 2\n"
        "loss = z\nreduce sum\nreduce mean\n")
    dn, dk, ix, iy, ik, pw, pu, pg, pc, pb, hl, hh, let, loss, rs, rm = stmts
    assert (dn.name, dn.value, dn.name_span.col) == ("N", 16, 5)
    assert (dk.name, dk.value) == ("K", None)
    assert ix.name == "x" and [s.id for s in ix.shape] == ["N", "K"] and not ix.is_int
    assert iy.shape == [] and not iy.is_int and ik.is_int
    assert isinstance(pw.shape[1], ast.Num) and pw.shape[1].value == 3
    assert (pw.init.kind, pw.init.args) == ("normal", [0.0, 0.1])
    assert (pu.init.kind, pu.init.args) == ("uniform", [-1.0, 1.0])
    assert (pg.init.kind, pg.init.args) == ("glorot", [])
    assert (pc.init.kind, pc.init.args) == ("const", [-1.5])
    assert pb.init is None
    assert (hl.name, hl.default, hh.default) == ("lam", 1e-3, -math.pi)
    assert isinstance(let, ast.Let) and let.name == "z" and to_text(let.value) == "(b * 2)"
    assert isinstance(loss, ast.LossStmt) and to_text(loss.value) == "z"
    assert (rs.kind, rm.kind) == ("sum", "mean")
    assert (pw.span.col, pw.span.end_col) == (1, 31)


@pytest.mark.parametrize("text, col, words", [
    ("dim N = -3", 9, ["positive integer", "'-3'"]),
    ("dim N = 2.0", 9, ["positive integer", "'2.0'"]),
    ("dim N = 0", 9, ["positive"]),
    ("dim N = M", 9, ["positive integer"]),
    ("dim N = 99999999999999999999", 9, ["too large"]),
    ("dim N 16", 7, ["'='"]),
    ("hyper lam", 7, ["needs a default"]),
    ("hyper lam = 1 + 2", 15, ["plain number"]),
    ("param w = zeros", 11, ["initial value"]),
    ("param w = normal(0, 1 / 2)", 23, ["plain number"]),
    ("param w = glorot()", 17, ["no arguments"]),
    ("input x[]", 9, ["expected a size"]),
    ("input x[2.5]", 9, ["integer"]),
    ("input x[N + 1]", 11, ["single dim"]),
    ("param w[N, K, L]", 15, ["at most 2"]),
    ("input y: real", 10, ["'int'"]),
    ("input x = 3", 9, ["no value"]),
    ("reduce max", 8, ["'sum' or 'mean'"]),
    ("loss 3", 6, ["expected '='"]),
    ("loss =", 6, ["expected an expression after '='"]),
    ("loss = a +", 10, ["expected an expression after '+'"]),
    ("loss = a ** 2", 10, ["'**'", "^"]),
    ("loss = 2 x", 10, ["unexpected 'x' after the end of the statement"]),
    ("loss = a)", 9, ["no '('"]),
    ("z == 3", 3, ["expected '=' after 'z'"]),
    ("3 = x", 1, ["expected a statement"]),
    ("loss = a < b < c", 14, ["cannot be chained"]),
    ("loss = (a]", 10, ["does not match"]),
    ("loss = v[]", 10, ["index"]),
    ("loss = v[1:2:3]", 13, ["step"]),
    ("loss = sum(axis=0, M)", 20, ["positional argument"]),
])
def test_syntax_errors(text, col, words):
    line, c, message = first_error(text)
    assert (line, c) == (1, col), message
    assert all(w in message for w in words), message


# ---------------------------------------------------------------- recovery


def test_several_independent_errors_in_one_run():
    module, errors = run("param w = 1\nz = w $ 2\nq = (w + 1\nexp = 2\n"
                         "loss = w *\ny = 2\n")
    assert [(line, col) for line, col, _ in errors] == [(2, 7), (3, 5), (4, 1), (5, 10)]
    assert "'$'" in errors[0][2] and "')'" in errors[1][2]
    # the statements without mistakes are kept
    assert [getattr(s, "name", None) for s in module.statements] == ["w", "y"]


def test_recovery_skips_a_whole_bracketed_statement():
    module, errors = run("z = (a +\n     b c)\nloss = z\n")
    assert [(line, col) for line, col, _ in errors] == [(2, 8)]
    assert "is an operator or ',' missing?" in errors[0][2]
    assert isinstance(module.statements[0], ast.LossStmt)


def test_unclosed_bracket_stops_at_the_next_statement():
    module, errors = run("q = sum(w,\n  axis=1\nloss = wx * 2\n")
    assert errors == [(1, 8, "expected ')' to close '(' opened at 1:8")]
    assert isinstance(module.statements[0], ast.LossStmt)


def test_unclosed_bracket_at_the_end_of_the_file_points_inside_it():
    for text in ["loss = (a +\n   b\n\n# trailing comment\n\n", "loss = [", "loss = v[1:"]:
        src = Source(text)
        _, errors = run(text)
        line, col, message = errors[0]
        assert 1 <= line <= len(src.lines) and 1 <= col <= len(src.line_text(line))
        assert line == 1


def test_errors_come_in_source_order():
    # the lexer finds line 2's '$' before the parser finds line 1's mistake
    _, errors = run("loss = (a +\nz = w $ 1\n")
    assert [(line, col) for line, col, _ in errors] == [(1, 11), (2, 7)]


def test_random_token_soup_never_crashes_and_points_inside_the_file():
    pieces = ["dim", "input", "param", "loss", "reduce", "not", "pi", "exp", "axis", "normal",
              "x", "N", "=", "==", "<", "+", "-", "*", "^", "@", "(", ")", "[", "]", ",",
              ":", "1", "2.5", "1_0", "1e400", "$", "#c", "\n", "\n", " ", "sum(", "axis="]
    rng = random.Random(1)
    for _ in range(3000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        src = Source(text)
        rep = Reporter(src)
        parse(src, rep, FUNCTIONS)
        for d in rep.errors:
            assert 1 <= d.span.line <= len(src.lines), (text, d.message)
            assert 1 <= d.span.col <= max(1, len(src.line_text(d.span.line))), (text, d)


# ---------------------------------------------------------------- lexical details


def test_comments_inside_brackets_and_blank_lines():
    stmts = parse_ok("# header\n\nloss = sum(   # a comment\n  a,  # another\n\n"
                     "  axis=0  # more\n) + (b  # here\n + c)  # end\n")
    assert to_text(stmts[0].value) == "(sum(a, axis=0) + (b + c))"


def test_crlf_bom_tabs_form_feed_and_indentation():
    stmts = parse_ok("\ufeffparam w = 1\r\n\tz = w\f* 2\r\n    loss = z\r\n")
    assert [type(s).__name__ for s in stmts] == ["ParamDecl", "Let", "LossStmt"]
    assert (stmts[1].name_span.line, stmts[1].name_span.col) == (2, 2)   # a tab is 1 column
    assert first_error("param w = 1\r\n\tloss = w $ 2\r\n") == (
        2, 11, "unexpected character '$'")


def test_columns_count_code_points():
    # a non-ASCII character in a comment before the error does not shift columns
    assert first_error("z = 1 # é\nloss = é")[:2] == (2, 8)


def test_lexer_tokens():
    tokens, errors = tokenize(Source("x<=1.5e2 # c\n"))
    assert errors == []
    assert [(t.kind, t.text) for t in tokens] == [
        ("name", "x"), ("op", "<="), ("number", "1.5e2"), ("newline", "\n"),
        ("newline", "\n"), ("eof", "")]
    assert tokens[2].value == 150.0 and not tokens[2].is_int
    assert (tokens[2].span.col, tokens[2].span.end_col) == (4, 9)


@pytest.mark.parametrize("text, col, words", [
    ("loss = a ! b", 10, ["'!'", "'!='"]),
    ("loss = a && b", 10, ["'&'", "'and'"]),
    ("loss = 'a'", 8, ["string"]),
    ("loss = α", 8, ["'α'", "ASCII"]),
    ("loss = a\u00a0+ b", 9, ["U+00A0"]),
    ("loss = a\v+ b", 9, ["U+000B"]),
])
def test_bad_characters(text, col, words):
    _, errors = run(text)
    assert len(errors) == 1
    line, c, message = errors[0]
    assert (line, c) == (1, col)
    assert all(w in message for w in words), message


# ---------------------------------------------------------------- size of programs


def test_deep_nesting_and_long_sums_parse():
    limit = sys.getrecursionlimit()
    (deep,) = parse_ok("loss = " + "(" * 1000 + "a" + ")" * 1000 + "\n")
    (calls,) = parse_ok("loss = " + "exp(" * 1000 + "a" + ")" * 1000)
    (long_sum,) = parse_ok("loss = " + " + ".join(["a"] * 10000) + "\n")
    (powers,) = parse_ok("loss = " + " ^ -".join(["a"] * 10000))
    assert sys.getrecursionlimit() == limit        # restored
    assert isinstance(deep.value, ast.Name)
    assert deep.value.id == "a"
    n, e = 0, calls.value
    while isinstance(e, ast.Call):
        n, e = n + 1, e.args[0]
    assert n == 1000
    n, e = 0, long_sum.value
    while isinstance(e, ast.Binary):               # left-nested: ((a + a) + a) + ...
        assert e.op == "+" and isinstance(e.right, ast.Name)
        n, e = n + 1, e.left
    assert n == 9999
    assert to_text(long_sum.value).count("+") == 9999
    assert to_text(powers.value).startswith("(a ^ (-(a ^ (-(a ^ ")


def test_nesting_beyond_the_limit_is_a_clean_error():
    n = MAX_NESTING + 1
    module, errors = run("loss = " + "(" * n + "a" + ")" * n + "\nz = 1\n")
    assert len(errors) == 1
    line, col, message = errors[0]
    assert (line, col) == (1, 8 + MAX_NESTING)
    assert "nested too deeply" in message
    assert [s.name for s in module.statements] == ["z"]   # recovers on the next line


@pytest.mark.parametrize("where", ["end", "start", "middle"])
def test_an_error_on_a_very_long_line_shows_a_window_of_it_with_the_caret_under_the_error(
        where):
    """A line of generated source may be megabytes long: the report shows 160 columns
    of it around the error, "..." where the line goes on, and the caret still under the
    offending name; the position in the header is the line's own."""
    terms = ["w * x"] * 20_000
    at = {"end": len(terms), "start": 0, "middle": len(terms) // 2}[where]
    terms.insert(at, "zz")
    line = "loss = " + " + ".join(terms)
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(f"input x\nparam w\n{line}\n", cache=False)
    report = str(info.value)
    col = line.index("zz") + 1
    assert f":3:{col}: error: unknown name 'zz'" in report
    head, shown, caret = report.splitlines()[:3]
    assert len(shown) <= 4 + 3 + 160 + 3 and len(report) < 1000
    assert caret.strip() == "^^" and shown[caret.index("^"):].startswith("zz")
    assert shown.startswith("    ...") == (where != "start")
    assert shown.endswith("...") == (where != "end")


def test_the_caret_stands_under_wide_characters_as_a_terminal_shows_them():
    """A CJK character takes two columns of a terminal: the caret counted code points
    and stood left of the error."""
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile("param w\nz = 1 # 数据\nloss = w + 数据 + 1\n", cache=False)
    head, shown, caret = str(info.value).splitlines()[:3]
    assert head.endswith(":3:12: error: unexpected characters '数据' (names use only ASCII "
                         "letters, digits and '_')")
    assert shown == "    loss = w + 数据 + 1" and caret == "    " + " " * 11 + "^" * 4


def test_control_characters_are_not_printed_raw():
    """An escape sequence in a source line reached the terminal as it was (colours, or
    worse); NUL likewise. Each shows as U+FFFD, one column, so the caret still fits."""
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile("param w\nloss = w \x1b[31m+ \x00 x\n", cache=False)
    report = str(info.value)
    assert "\x1b" not in report and "\x00" not in report
    head, shown, caret = report.splitlines()[:3]
    assert shown == "    loss = w \ufffd[31m+ \ufffd x" and caret == "    " + " " * 9 + "^"


def test_a_message_holding_a_huge_name_is_cut_short():
    """An unknown name of a megabyte made a header line of a megabyte."""
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile("param w\nloss = w + " + "q" * 1_000_000 + "\n", cache=False)
    head = str(info.value).splitlines()[0]
    assert len(head) < 500 and head.endswith("...")


def test_an_error_on_a_line_of_160_columns_shows_the_whole_line():
    line = "loss = zz" + " + w" * 37 + " +1"
    assert len(line) == 160
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(f"param w\n{line}\n", cache=False)
    assert str(info.value).splitlines()[1] == "    " + line
