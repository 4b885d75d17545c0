"""A file full of mistakes: the report shows the first MAX_ERRORS and counts the rest,
and finding them takes work linear in the file's length, whatever the kind of
mistake (counted in function calls, not timed)."""
import sys
import threading

import pytest
from click.testing import CliRunner

import lossc
from lossc.cli import main
from lossc.compiler import front_end
from lossc.source import MAX_ERRORS, CompileError, Source

# one bad line each (some with a good line before it), {i} a line number
BAD_LINES = {
    "a stray character": "x{i} = w $ 2",
    "an unclosed parenthesis": "x{i} = (w + 1",
    "an unknown name": "x{i} = nope{i} + 1",
    "an unknown name among many good ones": "x{i} = w + 1\ny{i} = nope{i} + x{i}",
    "a stray bracket": ") oops",
    "a bad number": "x{i} = 1_0",
    "an unknown function": "x{i} = foo{i}(w)",
    "a name used before its definition": "x{i} = z{i}\nz{i} = w",
    "a string": "x{i} = 'a' + w",
    "a rebinding": "w = {i}",
}


def program(line: str, n: int) -> str:
    return "param w = 1\n" + "\n".join(line.format(i=i) for i in range(n)) + "\nloss = w\n"


def calls_to_check(text: str) -> int:
    """Function calls (Python and C) made while the front end checks `text`, in this
    thread and any it starts: a measure of the work that does not depend on the
    machine's speed."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        front_end(Source(text))
    except CompileError:
        pass
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return count


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_finding_the_errors_of_a_file_takes_linear_work(kind):
    small = calls_to_check(program(BAD_LINES[kind], 500))
    large = calls_to_check(program(BAD_LINES[kind], 2000))
    assert large < 4.5 * small, (small, large)      # quadratic work gives about 16x


def test_a_report_shows_the_first_errors_and_counts_the_rest():
    n = 30_000
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(program("x{i} = w $ 2", n), cache=False)
    e = info.value
    assert len(e.diagnostics) == MAX_ERRORS and e.more_errors == n - MAX_ERRORS
    assert [d.span.line for d in e.diagnostics] == list(range(2, 2 + MAX_ERRORS))
    assert (e.line, e.col, e.message) == (2, 8, "unexpected character '$'")
    report = str(e).splitlines()
    assert report[-1] == "... and 29,950 more errors"
    assert sum("error:" in line for line in report) == MAX_ERRORS


def test_the_count_covers_errors_of_every_stage():
    """Syntax errors are reported first, then the builder's: one past the limit, all
    counted, the suggestions of the counted ones not computed."""
    src = program("x{i} = (w", MAX_ERRORS) + "z = nope\n"
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(src, cache=False)
    assert info.value.more_errors == 1
    assert str(info.value).endswith("\n... and 1 more error")


def test_the_command_line_prints_the_bounded_report(tmp_path):
    path = tmp_path / "bad.loss"
    path.write_text(program("x{i} = w $ 2", 200))
    r = CliRunner().invoke(main, ["compile", str(path)])
    assert r.exit_code == 1
    assert r.output.count("error:") == MAX_ERRORS
    assert r.output.rstrip().endswith("... and 150 more errors")
