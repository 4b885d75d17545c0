"""Source text, spans, and diagnostics with their rendering.

Every token, AST node and IR node carries a `Span`; every user-facing error is a
`Diagnostic` rendered as

    model.loss:7:18: error: shape mismatch: cannot add f64[32] and f64[16]
        z = dot(w, x) + v
                        ^

Columns are 1-based and count code points (a tab is one column).
"""
from __future__ import annotations

import difflib
import os
import pathlib
import stat
import unicodedata
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of source: from (line, col) up to but excluding (end_line, end_col)."""

    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def point(line: int, col: int) -> "Span":
        return Span(line, col, line, col + 1)

    def to(self, other: "Span") -> "Span":
        """The span covering `self` through `other`."""
        return Span(self.line, self.col, other.end_line, other.end_col)

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


class Source:
    """A `.loss` file's text, split into lines once for diagnostics."""

    def __init__(self, text: str, name: str = "<string>"):
        if text.startswith("\ufeff"):
            text = text[1:]
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.text = text
        self.name = name
        self.lines = text.split("\n")

    def line_text(self, line: int) -> str:
        if 1 <= line <= len(self.lines):
            return self.lines[line - 1]
        return ""

    def span_text(self, span) -> str:
        """The text a span covers, stripped, if it lies on one line; "" otherwise (or
        for no span), for messages that quote what the file wrote."""
        if span is None or span.line != span.end_line:
            return ""
        return self.line_text(span.line)[span.col - 1:span.end_col - 1].strip()

    @property
    def last_line(self) -> int:
        """The last line that holds something (1 for an empty file)."""
        n = len(self.lines)
        while n > 1 and not self.lines[n - 1].strip():
            n -= 1
        return max(n, 1)

    def end_span(self) -> Span:
        """A span on the last non-empty line, for whole-file errors."""
        line = self.last_line
        text = self.line_text(line)
        col = len(text) - len(text.lstrip()) + 1 if text.strip() else 1
        end = max(len(text.rstrip()) + 1, col + 1)
        return Span(line, col, line, end)


@dataclass
class Diagnostic:
    severity: str  # "error" or "warning"
    message: str
    span: Span
    notes: list[str] = field(default_factory=list)

    def render(self, source: Source) -> str:
        line, col = self.span.line, self.span.col
        message = self.message
        if len(message) > MAX_MESSAGE_SHOWN:     # (a name may be a megabyte long)
            message = message[:MAX_MESSAGE_SHOWN - 3] + "..."
        head = f"{source.name}:{line}:{col}: {self.severity}: {message}"
        text = _printable(source.line_text(line))
        if self.span.end_line == line:
            width = max(1, self.span.end_col - col)
        else:
            width = max(1, len(text) - col + 1)
        width = max(1, min(width, max(1, len(text) - col + 1)))
        text, at, width = _window(text, col, width)
        # the caret under the columns a terminal shows: a wide character (CJK) takes
        # two, a combining mark none
        caret = (" " * _columns(text[:at - 1])
                 + "^" * max(1, _columns(text[at - 1:at - 1 + width])))
        parts = [head, "    " + text, "    " + caret]
        parts += [f"    note: {n}" for n in self.notes]
        return "\n".join(parts)


MAX_ERRORS = 50    # errors one report shows; past them, errors are only counted
# a longer source line is shown as this many columns of it around the error (a line
# of generated source may be megabytes long)
MAX_LINE_SHOWN = 160
SHOWN_BEFORE = 60     # ... of which at most this many before the error's column


MAX_MESSAGE_SHOWN = 400   # characters of a message's line; past them "..."


def _printable(text: str) -> str:
    """A source line as the excerpt shows it: a tab as a space, any other control
    character (NUL, an escape that a terminal would act on) as U+FFFD, one for one, so
    the columns stay the line's."""
    return "".join(" " if c == "\t" else "\ufffd" if unicodedata.category(c) == "Cc"
                   else c for c in text)


def _columns(text: str) -> int:
    """The terminal columns `text` takes: two for a wide or full-width character, none
    for a combining mark."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _window(text: str, col: int, width: int) -> tuple[str, int, int]:
    """(what to show of the line `text`, the caret's column in it, the caret's width)
    for an error at column `col` spanning `width` columns: the whole line if it is at
    most MAX_LINE_SHOWN columns, else MAX_LINE_SHOWN of them from up to SHOWN_BEFORE
    before the error, with "..." where the line goes on."""
    if len(text) <= MAX_LINE_SHOWN:
        return text, col, width
    start = max(0, min(col - 1 - SHOWN_BEFORE, len(text) - MAX_LINE_SHOWN))
    end = start + MAX_LINE_SHOWN
    before = "..." if start > 0 else ""
    after = "..." if end < len(text) else ""
    return (before + text[start:end] + after, col - start + len(before),
            max(1, min(width, end - (col - 1))))


class CompileError(ValueError):
    """A mistake in a `.loss` file. `str()` is the whole report.

    `line`, `col` and `message` describe the first error; `diagnostics` holds the
    errors found in the run (the compiler reports independent errors together), up to
    MAX_ERRORS of them, and `more_errors` counts those found past that.
    """

    def __init__(self, diagnostics: list[Diagnostic], source: Source, more_errors: int = 0):
        self.diagnostics = [d for d in diagnostics if d.severity == "error"] or diagnostics
        self.source = source
        self.more_errors = more_errors
        first = self.diagnostics[0]
        self.line = first.span.line
        self.col = first.span.col
        self.message = first.message
        self.filename = source.name
        report = [d.render(source) for d in self.diagnostics]
        if more_errors:
            report.append(f"... and {more_errors:,} more error{'s' * (more_errors != 1)}")
        super().__init__("\n".join(report))


class Reporter:
    """Collects diagnostics during one compilation: every warning, and the first
    `max_errors` errors; the errors past those are only counted."""

    def __init__(self, source: Source, max_errors: int = MAX_ERRORS):
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self.max_errors = max_errors
        self.error_count = 0

    @property
    def full(self) -> bool:
        """Whether a further error would only be counted: work that only improves an
        error's message (a suggestion) can be skipped."""
        return self.error_count >= self.max_errors

    @property
    def more_errors(self) -> int:
        return max(self.error_count - self.max_errors, 0)

    def error(self, message: str, span: Span, notes: list[str] | None = None) -> Diagnostic:
        d = Diagnostic("error", message, span, notes or [])
        if not self.full:
            self.diagnostics.append(d)
        self.error_count += 1
        return d

    def warning(self, message: str, span: Span) -> Diagnostic:
        d = Diagnostic("warning", message, span)
        self.diagnostics.append(d)
        return d

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.error_count:
            raise CompileError(self.errors, self.source, self.more_errors)


def closest_name(name: str, candidates) -> str | None:
    """The declared name a misspelt `name` most likely meant, if any is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


# ------------------------------------------------------------ reading source files
# (here, not in the compiler: lossc.compile reads the source before it knows whether the
# compile cache holds the model, and a hit must not import the compiler)

MAX_SOURCE_BYTES = 16 * 1024 * 1024     # the largest source file read

_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
                (stat.S_ISSOCK, "a socket"))


def read_source(src) -> Source:
    """A pathlib.Path, or a string with no newline that ends in `.loss` or names an
    existing file (or folder: an error that says so), is read from disk; any other
    string is source text."""
    if isinstance(src, Source):
        return src
    if isinstance(src, os.PathLike) or (
            isinstance(src, str) and "\n" not in src
            and (src.endswith(".loss") or os.path.isfile(src) or os.path.isdir(src))):
        path = pathlib.Path(src)
        return decode_source(read_source_file(path), str(path))
    if isinstance(src, str):
        return text_source(src, "<string>")
    raise TypeError(f"expected a path or source text, got {type(src).__name__}")


def read_source_file(path: pathlib.Path) -> bytes:
    """The bytes of a regular file of at most MAX_SOURCE_BYTES. A device (/dev/zero)
    or a pipe could be read without end, or block: the file is opened without waiting
    and what it is checked on the open descriptor, which cannot change underneath."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        for test, kind in _NOT_REGULAR:
            if test(mode):
                raise ValueError(f"cannot read {path}: it is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:
        raise ValueError(f"cannot read {path}: it is larger than "
                         f"{MAX_SOURCE_BYTES // (1024 * 1024)} MB, the most a source file "
                         "may hold")
    return data


def text_source(text: str, name: str) -> Source:
    """Python text as a Source; a lone surrogate (which no file can hold, and UTF-8
    cannot encode) is a CompileError at the first, shown as U+FFFD in its line."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        before = Source(text[:e.start])
        line, col = len(before.lines), len(before.lines[-1]) + 1
        message = (f"the text holds U+{ord(text[e.start]):04X} at offset {e.start}, a lone "
                   "surrogate, which is not a character")
        shown = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
        raise CompileError([Diagnostic("error", message, Span.point(line, col))],
                           Source(shown, name)) from None
    return Source(text, name)


def decode_source(data: bytes, name: str) -> Source:
    """UTF-8 text as a Source; invalid UTF-8 is a CompileError at its first bad byte,
    shown in its line (where each bad sequence reads as U+FFFD)."""
    try:
        return Source(data.decode("utf-8"), name)
    except UnicodeDecodeError as e:
        before = Source(data[:e.start].decode("utf-8"))   # (its line breaks, its BOM)
        line, col = len(before.lines), len(before.lines[-1]) + 1
        message = (f"the file is not valid UTF-8: byte 0x{data[e.start]:02X} at offset "
                   f"{e.start}: {e.reason}")
        raise CompileError([Diagnostic("error", message, Span.point(line, col))],
                           Source(data.decode("utf-8", errors="replace"), name)) from None
