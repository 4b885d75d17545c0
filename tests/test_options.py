"""Options, not globals (lossc/options.py): the environment read once, at lossc.compile,
lossc.load or a command; an Options carried down to code generation and the runtime;
nothing process-wide changed on the way."""
import ast
import dataclasses
import pathlib
import warnings

import numpy as np
import pytest

import lossc
from lossc.codegen.units import LOSS, PERMUTATION, VALUE_AND_GRAD
from lossc.options import Options
from lossc.runtime import artifact

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOGISTIC = ("dim D = 3\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
            "z = dot(w, x) + b\nloss = softplus(z) - y * z\n")


def test_the_environment_as_options():
    env = {"LOSSC_VECTOR_BITS": "256", "LOSSC_LOADER": "llvm", "LOSSC_CACHE_DIR": "/c",
           "XDG_CACHE_HOME": "/x", "HOME": "/h"}
    assert Options.from_env(env) == Options(256, "llvm", pathlib.Path("/c"))
    assert Options.from_env({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Options(
        None, "elf", pathlib.Path("/x/lossc"))
    assert Options.from_env({"HOME": "/h", "LOSSC_LOADER": "elf"}).cache_dir == \
        pathlib.Path("/h/.cache/lossc")
    assert Options.from_env({"LOSSC_VECTOR_BITS": "", "HOME": "/h"}).vector_bits is None


def test_a_relative_cache_folder_is_made_absolute_when_the_options_are_made(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Options(cache_dir="c").cache_dir == tmp_path / "c"
    assert Options.from_env({"LOSSC_CACHE_DIR": "e"}).cache_dir == tmp_path / "e"
    assert Options.from_env({"XDG_CACHE_HOME": "x"}).cache_dir == tmp_path / "x" / "lossc"
    # an empty LOSSC_CACHE_DIR is an unset one; an empty cache_dir is refused, as
    # pathlib.Path("") would make the current folder the cache
    assert Options.from_env({"LOSSC_CACHE_DIR": "", "HOME": "/h"}).cache_dir == \
        pathlib.Path("/h/.cache/lossc")
    with pytest.raises(ValueError, match="cache_dir"):
        Options(cache_dir="")


@pytest.mark.parametrize("value, want", [("~/x", "/h/x"), ("~", "/h"), ("a/~/b", None),
                                         ("~other/x", None)])
def test_a_cache_folder_from_the_home_folder_as_the_shell_writes_it(
        tmp_path, monkeypatch, value, want):
    """LOSSC_CACHE_DIR="~/x" (quoted, so no shell expanded it) made a folder named ~ in
    the current folder."""
    monkeypatch.chdir(tmp_path)
    got = Options.from_env({"LOSSC_CACHE_DIR": value, "HOME": "/h"}).cache_dir
    assert got == (pathlib.Path(want) if want else tmp_path / value)


def test_a_model_saved_after_a_chdir_verifies_with_its_relative_cache_folder(
        tmp_path, monkeypatch):
    """LOSSC_CACHE_DIR=cache was taken from whatever the current folder was when the
    cache was used: after an os.chdir a second cache and key appeared there, and the
    model saved with it did not verify back in the first folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("LOSSC_CACHE_DIR", "cache")
    m = lossc.compile(LOGISTIC)
    monkeypatch.chdir(tmp_path / "b")
    m.save(tmp_path / "m.lossc")
    monkeypatch.chdir(tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lossc.load(tmp_path / "m.lossc", recompile=False)
    assert sorted(p.name for p in tmp_path.rglob("hmac-key")) == ["hmac-key"]
    assert (tmp_path / "a" / "cache" / "hmac-key").exists()


@pytest.mark.parametrize("field, value", [("vector_bits", 96), ("vector_bits", "256"),
                                          ("vector_bits", True), ("loader", "mcjit")])
def test_options_that_are_none_of_lossc_s_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Options(**{field: value})


def _entries(folder: pathlib.Path) -> set:
    return {p.name for p in folder.glob("*.lossc")} if folder.exists() else set()


def test_options_travel_with_the_model_not_the_environment(tmp_path, monkeypatch):
    """The width, the loader and the cache folder a model was compiled with stay its
    own: code units compiled later (the objective, the training steps, the shuffle)
    use them, whatever the environment says by then."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(other))
    monkeypatch.setenv("LOSSC_VECTOR_BITS", "512")
    m = lossc.compile(LOGISTIC, options=Options(vector_bits=128, cache_dir=mine))
    assert m.meta["vector_bits"] == 128 and m.options.cache_dir == mine
    monkeypatch.setenv("LOSSC_VECTOR_BITS", "256")
    monkeypatch.setenv("LOSSC_LOADER", "llvm")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3000, 3)), (rng.random(3000) < 0.5) * 1.0
    lossc.train(m, data={"x": X, "y": Y}, optimizer=lossc.Adam(0.05), batch_size=64,
                epochs=2, seed=1)
    assert m.loss(m.init_params(), x=X, y=Y) > 0
    assert _entries(other) == set()
    names = {artifact.read(mine / e)[0].get("library", "model") for e in _entries(mine)}
    assert names == {"model", "train.adam", PERMUTATION}
    (entry,) = [mine / e for e in _entries(mine)
                if "library" not in artifact.read(mine / e)[0]]
    header, objects = artifact.read(entry)
    assert header["vector_bits"] == 128 and set(objects) == {VALUE_AND_GRAD, LOSS}
    assert type(m.code._unit(LOSS)).__name__ == "ElfCode"


def test_the_loader_option_picks_the_loader():
    from lossc.runtime.elf import supported
    m = lossc.compile(LOGISTIC, cache=False, options=Options(loader="llvm"))
    assert type(m.code._unit(VALUE_AND_GRAD)).__name__ == "NativeCode"
    if supported():
        m = lossc.compile(LOGISTIC, cache=False, options=Options(loader="elf"))
        assert type(m.code._unit(VALUE_AND_GRAD)).__name__ == "ElfCode"


def test_no_cache_folder_means_nothing_cached_signed_or_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path / "env"))
    options = Options(cache_dir=None)
    m = lossc.compile(LOGISTIC, options=options)
    with pytest.warns(RuntimeWarning, match="not signed"):
        m.save(tmp_path / "m.lossc")
    with pytest.warns(lossc.LosscWarning, match="recompiling"):
        again = lossc.load(tmp_path / "m.lossc", options=options)
    theta = m.init_params()
    X, Y = np.ones((4, 3)), np.zeros(4)
    assert again.loss(theta, x=X, y=Y) == m.loss(theta, x=X, y=Y)
    assert not (tmp_path / "env").exists()


def test_a_saved_model_verifies_with_the_cache_folder_it_was_signed_with(tmp_path):
    options = dataclasses.replace(Options.from_env(), cache_dir=tmp_path / "keys")
    m = lossc.compile(LOGISTIC, cache=False, options=options)
    m.save(tmp_path / "m.lossc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lossc.load(tmp_path / "m.lossc", recompile=False, options=options)
    with pytest.raises(artifact.ArtifactError, match="does not verify"):
        lossc.load(tmp_path / "m.lossc", recompile=False,
                   options=dataclasses.replace(options, cache_dir=tmp_path / "other"))


def _reads_of_the_environment(path: pathlib.Path) -> list:
    """Where a file reads or changes os.environ, or calls getenv/putenv."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv",
                                                             "unsetenv"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_lossc_options_reads_the_environment():
    found = [hit for path in sorted((ROOT / "lossc").rglob("*.py"))
             if path.name != "options.py" for hit in _reads_of_the_environment(path)]
    assert found == []


# calls that change what the whole process does, whoever else runs in it
PROCESS_WIDE = {("sys", "setrecursionlimit"), ("threading", "stack_size"),
                ("sys", "setswitchinterval"), ("np", "seterr"), ("np", "set_printoptions"),
                ("os", "chdir"), ("os", "umask")}


def test_no_module_changes_a_process_wide_setting():
    found = []
    for path in sorted((ROOT / "lossc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in PROCESS_WIDE):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
