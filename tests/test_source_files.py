"""Reading a `.loss` file: regular files only, of a bounded size, and invalid UTF-8
reported where it is."""
import os
import subprocess
import sys

import pytest

import lossc
from conftest import ROOT
from lossc.compiler import MAX_SOURCE_BYTES


def lossc_cli(*args):
    """The command line as a real process: a read that never ends is caught by the
    timeout."""
    return subprocess.run([sys.executable, "-m", "lossc.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_a_device_is_refused_not_read():
    p = lossc_cli("compile", "/dev/zero")
    assert p.returncode == 1
    assert p.stderr == ("lossc: error: cannot read /dev/zero: it is a character device, "
                        "not a regular file\n")


def test_a_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "model.loss"
    os.mkfifo(fifo)
    p = lossc_cli("compile", fifo)
    assert p.returncode == 1
    assert p.stderr.strip().endswith("it is a pipe, not a regular file")


def test_a_directory_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="it is a directory, not a regular file"):
        lossc.compile(tmp_path, cache=False)
    # named by a string (no newline, no .loss): it was parsed as source text,
    # "expected '=' after 'models'"
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cannot read models: it is a directory"):
        lossc.compile("models", cache=False)


def test_a_file_past_the_size_bound_is_refused(tmp_path):
    path = tmp_path / "big.loss"
    with open(path, "wb") as f:
        f.write(b"param w = 1\nloss = w\n")
        f.truncate(MAX_SOURCE_BYTES + 1)        # (a sparse file: zeros past the text)
    with pytest.raises(ValueError, match=r"larger than 16 MB"):
        lossc.compile(path, cache=False)
    path.write_bytes(b"param w = 1\nloss = w\n" + b" " * (MAX_SOURCE_BYTES - 21))
    assert os.path.getsize(path) == MAX_SOURCE_BYTES
    assert lossc.compile(path, cache=False).loss({"w": 2.0}) == 2.0


@pytest.mark.parametrize("text, line, col", [
    ("param p = 1\nloss = p # ? \ud800 ?", 2, 14), ("param p\udfff = 1\nloss = p", 1, 8),
    ("\ufeffparam p = 1\r\nloss = \udc80p\r\n", 2, 8),
])
def test_a_lone_surrogate_in_source_text_is_reported_where_it_is(text, line, col):
    """Python text can hold what no file can: UTF-8 cannot encode a lone surrogate (the
    cache key's hash raised UnicodeEncodeError)."""
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(text)
    e = info.value
    assert (e.line, e.col) == (line, col) and "lone surrogate" in e.message
    head, shown, caret = str(e).splitlines()
    assert shown[4 + col - 1] == "\ufffd" and caret == " " * (4 + col - 1) + "^"
    assert "?" in shown or "?" not in text


@pytest.mark.parametrize("data, line, col, byte", [
    (b"\xffparam w = 1\nloss = w\n", 1, 1, "0xFF"),
    (b"param w = 1\n# caf\xc3\xa9 \xff\xfe here\nloss = w\n", 2, 8, "0xFF"),
    (b"\xef\xbb\xbfparam w = 1\r\nloss = w \xc3 + 1\r\n", 2, 10, "0xC3"),
    (b"param w = 1\rloss = w\r# \xe2\x82", 3, 3, "0xE2"),
])
def test_invalid_utf8_is_reported_at_its_first_bad_byte(tmp_path, data, line, col, byte):
    """Columns count characters (é is one), a BOM is not one, and \\r\\n or \\r ends a
    line, as everywhere else; the line is shown with the bad bytes as U+FFFD."""
    path = tmp_path / "m.loss"
    path.write_bytes(data)
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(path, cache=False)
    e = info.value
    assert (e.line, e.col) == (line, col)
    assert e.message.startswith(f"the file is not valid UTF-8: byte {byte} at offset ")
    head, shown, caret = str(e).splitlines()
    assert head.startswith(f"{path}:{line}:{col}: error:")
    assert shown[4 + col - 1] == "\ufffd" and caret == " " * (4 + col - 1) + "^"
