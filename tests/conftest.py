"""Shared fixtures: where the shared conformance cases live, and a private compile cache
so tests never depend on (or pollute) the user's cache."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance"
SAMPLES = ROOT / "samples"


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
