"""Shared fixtures: where the shared conformance cases live, and a private compile cache
so tests never depend on (or pollute) the user's cache."""
import os
import pathlib
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance"
SAMPLES = ROOT / "samples"


def drained_pipe(fifo):
    """Open the pipe `fifo` for reading (so that a writer's open does not block) and
    collect what is written to it on a thread: (thread, bytes received, descriptor)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    received = bytearray()

    def drain():
        os.set_blocking(fd, True)
        while (chunk := os.read(fd, 1 << 16)) or not received:
            received.extend(chunk)
            if not chunk:
                threading.Event().wait(0.05)    # the writer has not opened it yet
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return reader, received, fd


def assert_compile_error(source: str, line: int, col: int, words) -> None:
    """Compiling `source` fails first at line:col with a message holding each word."""
    import lossc
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(source)
    e = info.value
    assert (e.line, e.col) == (line, col), str(e)
    for w in words:
        assert w in e.message, (w, e.message)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["LOSSC_CACHE_DIR"] = str(tmp_path_factory.mktemp("lossc-cache"))
    yield


def pytest_addoption(parser):
    parser.addoption("--sweep", choices=("fast", "full"), default="fast",
                     help="the size sweep's level (tests/sweep.py): fast, in every run, "
                          "or full (make verify)")
