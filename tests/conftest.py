"""Shared fixtures: where the shared conformance cases live, and a private compile cache
so tests never depend on (or pollute) the user's cache."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance"
SAMPLES = ROOT / "samples"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["LOSSC_CACHE_DIR"] = str(tmp_path_factory.mktemp("lossc-cache"))
    yield


def pytest_addoption(parser):
    parser.addoption("--sweep", choices=("fast", "full"), default="fast",
                     help="the size sweep's level (tests/sweep.py): fast, in every run, "
                          "or full (make verify)")
