"""Who may run the machine code of a `.lossc` file (lossc/runtime/artifact.py): files
signed with this user's key, or vouched for with trust=True and checked against their
source; cache entries that verify and were made for what they are looked up for, in a
folder only this user can write; reads of regular files only, bounded; `lossc cache
--clear` deletes lossc's entries only. Crafted files throughout: replaced machine code
(one version calls system()), changed header fields, entries copied over another key,
unsafe folders and files."""
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import lossc
from conftest import ROOT, SAMPLES, drained_pipe
from lossc.codegen.units import VALUE_AND_GRAD
from lossc.runtime import artifact

LOGISTIC = SAMPLES / "logistic.loss"
# the same signature, another objective: its machine code is "foreign" to a logistic
# model's file, yet calls nothing a loader refuses
DOUBLED = LOGISTIC.read_text().replace("loss = softplus(z)", "loss = 2 * softplus(z)")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
    """A fresh cache folder of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(folder))
    return folder


def _data(B=6, D=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(B, D)), "y": (rng.random(B) < 0.5).astype(float)}


def _value(m) -> float:
    """The objective, as the gradient's code (the unit replaced below) computes it."""
    return m.value_and_grad(m.init_params(seed=1), **_data())[0]


def _rewrite(path, key=None, objects=None, **fields) -> None:
    """Write the file at `path` again with some object files or header fields
    replaced, signed with `key` (None: not signed, as anyone without the user's key
    must write it)."""
    contents = artifact.read_file(path, None)
    header = dict(contents.header, **fields)
    path.write_bytes(artifact.encode(header, dict(contents.objects, **(objects or {})), key))


def _system_object(marker: pathlib.Path) -> bytes:
    """lossc_value_and_grad that runs `touch marker`."""
    import llvmlite.binding as llvm
    from lossc.codegen.jit import compile_ir
    command = f"touch {marker}".encode() + b"\0"
    return compile_ir(f"""
target triple = "{llvm.get_process_triple()}"
@command = private constant [{len(command)} x i8] c"{command[:-1].decode()}\\00"
declare i32 @system(ptr)
define i32 @lossc_value_and_grad(ptr %frame) {{
  %r = call i32 @system(ptr @command)
  ret i32 0
}}
""")


def _doubled_object() -> bytes:
    return lossc.compile(DOUBLED, cache=False).code.complete()[VALUE_AND_GRAD]


def _model_entry(folder) -> pathlib.Path:
    (path,) = [p for p in folder.glob("*.lossc") if "library" not in artifact.read(p)[0]]
    return path


def _count_builds(monkeypatch) -> list:
    """The compilations lossc.compile runs (cache misses), as a growing list."""
    import lossc.api
    built, real = [], lossc.api._build
    monkeypatch.setattr(lossc.api, "_build", lambda *a: built.append(a) or real(*a))
    return built


# ---------------------------------------------------------------- artifacts

def test_an_artifact_with_foreign_machine_code_is_recompiled_unless_trusted(tmp_path, cache):
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    _rewrite(path, objects={VALUE_AND_GRAD: _doubled_object()})
    with pytest.warns(lossc.LosscWarning, match="not made on this machine by this user"):
        assert _value(lossc.load(path)) == _value(m)
    with pytest.raises(artifact.ArtifactError, match="not made on this machine"):
        lossc.load(path, recompile=False)
    # the caller vouches for it: its own code runs (the header agrees with the source)
    assert _value(lossc.load(path, trust=True)) == pytest.approx(
        _value(lossc.compile(DOUBLED, cache=False)), rel=1e-12)


def test_replaced_code_calling_system_never_runs(tmp_path, cache, monkeypatch):
    marker = tmp_path / "MARKER"
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    _rewrite(path, objects={VALUE_AND_GRAD: _system_object(marker)})
    with pytest.warns(lossc.LosscWarning, match="recompiling"):
        assert _value(lossc.load(path)) == _value(m)
    with pytest.raises(artifact.ArtifactError, match="not made on this machine"):
        lossc.load(path, recompile=False)
    for loader in ("", "llvm"):      # lossc's ELF loader, and LLVM's MCJIT
        monkeypatch.setenv("LOSSC_LOADER", loader)
        with pytest.raises(artifact.ArtifactError, match="'system'"):
            lossc.load(path, trust=True)
    assert not marker.exists()


def test_an_artifact_signed_by_another_key_is_not_run(tmp_path, cache, monkeypatch):
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path / "another users cache"))
    lossc.compile("param a = 1\nloss = a ^ 2\n")       # (which makes that folder's key)
    with pytest.raises(artifact.ArtifactError, match="not made on this machine"):
        lossc.load(path, recompile=False)
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(cache))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _value(lossc.load(path, recompile=False)) == _value(m)


@pytest.mark.parametrize("change", ["work_size", "huge_work_size", "signature", "dims",
                                    "index_checks", "source", "another_source",
                                    "vector_bits"])
def test_a_trusted_artifact_must_agree_with_its_source(tmp_path, cache, change):
    """trust=True vouches for the machine code, not for the header: each field a call
    relies on is checked against the embedded source compiled again."""
    m = lossc.compile(SAMPLES / "softmax.loss", cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    header = artifact.read(path)[0]
    work = {u: w // 2 for u, w in header["unit_work"].items()}
    fields = {
        "work_size": {"work_size": header["work_size"] // 2, "unit_work": work},
        # (every call would allocate it: a MemoryError at each call, not at the load)
        "huge_work_size": {"work_size": header["work_size"] << 40},
        "signature": {"signature": dict(header["signature"], params=[
            [n, [1] * len(s), i, o] for n, s, i, o in header["signature"]["params"]])},
        "dims": {"dims": {k: v + 1 for k, v in header["dims"].items()}},
        "index_checks": {"index_checks": []},
        "source": {"source": header["source"] + "\n"},        # (its hash as it was)
        "another_source": {"source": DOUBLED, "source_sha256": artifact.hashlib.sha256(
            DOUBLED.encode()).hexdigest()},
        "vector_bits": {"vector_bits": 96},
    }[change]
    _rewrite(path, **fields)
    with pytest.raises(artifact.ArtifactError, match="damaged"):
        lossc.load(path, trust=True)
    with pytest.raises(artifact.ArtifactError, match="not made on this machine"):
        lossc.load(path, recompile=False)          # (unsigned: its code never runs)


def test_a_trusted_artifact_that_agrees_runs_without_recompiling(tmp_path, cache):
    m = lossc.compile(SAMPLES / "mlp.loss", cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    _rewrite(path)                    # the same file, unsigned
    import lossc.codegen.jit as jit
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jit, "compile_ir", None)
        loaded = lossc.load(path, trust=True)
    theta = m.init_params(seed=2)
    data = {i.name: np.random.default_rng(0).normal(size=(9,) + i.shape) for i in m.inputs}
    assert loaded.loss(theta, **data) == m.loss(theta, **data)


def _damaged_relocation(obj: bytes, how: str) -> bytes:
    """obj with the first relocation of a loaded section changed: its place past the
    end of its section, its symbol past the symbol table, a type no loader knows, or
    an addend that cannot fit its 32-bit field."""
    from lossc.runtime import elf
    obj = bytearray(obj)
    sections = elf._section_headers(bytes(obj))
    (start, info) = next((s[4], s[7]) for s in sections
                         if s[1] == elf.SHT_RELA and sections[s[7]][2] & elf.SHF_ALLOC)
    offset, kind, addend = elf._RELA.unpack_from(obj, start)
    offset, kind, addend = {
        "place": (sections[info][5] + 4096, kind, addend),
        "symbol": (offset, (0xffffff << 32) | (kind & 0xffffffff), addend),
        "type": (offset, (kind >> 32 << 32) | 37, addend),
        "addend": (offset, kind, addend + (1 << 40))}[how]
    elf._RELA.pack_into(obj, start, offset, kind, addend)
    return bytes(obj)


@pytest.mark.parametrize("how", ["place", "symbol", "type", "addend"])
def test_a_trusted_artifact_with_a_damaged_object_is_refused(tmp_path, cache, how):
    """lossc's loader refuses such an object; it must not hand it to MCJIT instead,
    which aborted the process (an assertion, 'LLVM ERROR') on each of these."""
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    damaged = _damaged_relocation(m.code.complete()[VALUE_AND_GRAD], how)
    _rewrite(path, objects={VALUE_AND_GRAD: damaged})
    run = _load_in_subprocess(path, cache, trust=True)
    assert run.returncode == 0, run.stderr
    assert "refused: refusing to load machine code" in run.stdout, run.stdout


def _damaged_section(obj: bytes, how: str) -> bytes:
    """obj with its first allocated PROGBITS section given an alignment of 3 (not a
    power of two) or marked thread-local (SHF_TLS)."""
    from lossc.runtime import elf
    obj = bytearray(obj)
    sections = elf._section_headers(bytes(obj))
    index = next(i for i, s in enumerate(sections)
                 if s[1] == elf.SHT_PROGBITS and s[2] & elf.SHF_ALLOC)
    fields = list(sections[index])
    if how == "alignment":
        fields[8] = 3
    else:
        fields[2] |= elf.SHF_TLS
    shoff = elf._EHDR.unpack_from(obj)[6]
    elf._SHDR.pack_into(obj, shoff + index * elf._SHDR.size, *fields)
    return bytes(obj)


@pytest.mark.parametrize("loader", ["elf", "llvm"])
@pytest.mark.parametrize("how", ["alignment", "tls"])
def test_a_trusted_artifact_with_a_section_lossc_never_makes_is_refused(
        tmp_path, cache, how, loader):
    """lossc's loader does not load such an object, and MCJIT aborted the process on
    each ('Alignment is neither 0 nor a power of 2', 'allocation of TLS not
    implemented'): it was handed to MCJIT after lossc's loader gave up, and with
    LOSSC_LOADER=llvm unchecked."""
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    _rewrite(path)
    run = _load_in_subprocess(path, cache, trust=True, loader=loader)
    assert run.returncode == 0 and run.stdout == f"value {_value(m)!r}\n", run.stderr
    damaged = _damaged_section(m.code.complete()[VALUE_AND_GRAD], how)
    _rewrite(path, objects={VALUE_AND_GRAD: damaged})
    run = _load_in_subprocess(path, cache, trust=True, loader=loader)
    assert run.returncode == 0, run.stderr
    words = "power of two" if how == "alignment" else "thread-local"
    assert "refused: refusing to load machine code" in run.stdout and words in run.stdout, \
        run.stdout


def test_an_artifact_whose_source_is_larger_than_a_source_file_may_be_is_damaged(
        tmp_path, cache):
    """Loading a file that does not verify compiles its embedded source, which the
    file may make up to 256 MB: it is bounded as a source file is (16 MB)."""
    from lossc.compiler import MAX_SOURCE_BYTES
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    source = "#" * MAX_SOURCE_BYTES + "\n" + LOGISTIC.read_text()
    _rewrite(path, source=source,
             source_sha256=artifact.hashlib.sha256(source.encode()).hexdigest())
    with pytest.raises(artifact.ArtifactError, match="damaged lossc artifact .its source"), \
            pytest.warns(lossc.LosscWarning, match="recompiling"):
        lossc.load(path)


def test_an_artifact_whose_source_holds_a_lone_surrogate_is_damaged(tmp_path, cache):
    """JSON can hold \\ud800, which no UTF-8 encodes: trusted, the source's hash
    raised UnicodeEncodeError out of lossc.load."""
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    _rewrite(path, source=LOGISTIC.read_text() + "# \ud800\n")
    with pytest.raises(artifact.ArtifactError, match="damaged"):
        lossc.load(path, trust=True)
    with pytest.raises(artifact.ArtifactError, match="damaged"), \
            pytest.warns(lossc.LosscWarning, match="recompiling"):
        lossc.load(path)


def test_unsigned_files_of_older_layouts_are_recompiled(tmp_path, cache):
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    blob = path.read_bytes()
    path.write_bytes(b"LOSSC\x02" + blob[6:-artifact.TAG_SIZE])
    with pytest.warns(lossc.LosscWarning, match="older lossc"):
        assert _value(lossc.load(path, trust=True)) == _value(m)


def test_save_writes_through_a_symbolic_link_and_into_a_pipe(tmp_path, cache):
    """Model.save writes as lossc compile -o does (README, "Outputs lose nothing"): it
    replaced a symbolic link by a file of its own, leaving the file the link names
    as it was, and a pipe by a regular file no reader saw."""
    m = lossc.compile(LOGISTIC)
    target, link = tmp_path / "real.lossc", tmp_path / "link.lossc"
    target.write_bytes(b"old")
    link.symlink_to(target)
    m.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert _value(lossc.load(target, recompile=False)) == _value(m)
    fifo = tmp_path / "pipe.lossc"
    os.mkfifo(fifo)
    reader, received, fd = drained_pipe(fifo)
    try:
        m.save(fifo)
        reader.join(timeout=60)
    finally:
        os.close(fd)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert bytes(received) == target.read_bytes()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cache", "link.lossc",
                                                          "pipe.lossc", "real.lossc"]


def test_save_replaces_a_read_only_file_and_keeps_its_mode(tmp_path, cache):
    """The temporary file took the old file's mode (0444) and was then opened to be
    written for its fsync: PermissionError, naming the temporary file. As root, run
    without the capability that passes over file modes."""
    path = tmp_path / "ro.lossc"
    path.write_bytes(b"old")
    path.chmod(0o444)
    code = f"import lossc; lossc.compile({str(LOGISTIC)!r}, cache=False).save({str(path)!r})"
    drop = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
            if os.geteuid() == 0 else [])
    if drop and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv")
    done = subprocess.run(drop + [sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, env={**os.environ,
                                                       "LOSSC_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert _value(lossc.load(path, recompile=False)) == _value(lossc.compile(LOGISTIC))


# ---------------------------------------------------------------- reading files

def _load_in_subprocess(path, cache, trust=False, loader="elf") -> subprocess.CompletedProcess:
    """Load `path` in another process (which prints the refusal, or the value of
    _value once loaded), so that a load that kills its process fails the test."""
    code = textwrap.dedent(f"""
        import numpy as np
        import lossc
        from lossc.runtime.artifact import ArtifactError
        try:
            m = lossc.load({str(path)!r}, trust={trust})
        except ArtifactError as e:
            print("refused:", e)
        else:
            rng = np.random.default_rng(0)
            data = {{"x": rng.normal(size=(6, 8)), "y": (rng.random(6) < 0.5).astype(float)}}
            print("value", repr(m.value_and_grad(m.init_params(seed=1), **data)[0]))
        """)
    env = dict(os.environ, LOSSC_CACHE_DIR=str(cache), LOSSC_LOADER=loader)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_only_regular_files_are_read(tmp_path, cache, kind):
    path = {"device": pathlib.Path("/dev/zero"), "fifo": tmp_path / "pipe.lossc",
            "folder": tmp_path / "folder.lossc"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    if not path.exists():
        pytest.skip(f"no {path} here")
    run = _load_in_subprocess(path, cache)
    assert run.returncode == 0, run.stderr
    assert f"refused: {path} is not a lossc artifact (not a regular file)" in run.stdout


def test_reads_are_bounded_by_what_the_header_declares(tmp_path, cache):
    m = lossc.compile(LOGISTIC, cache=False)
    path = tmp_path / "m.lossc"
    m.save(path)
    good = path.read_bytes()
    n = int.from_bytes(good[6:14], "little")
    for blob in (good + b"\0",                                        # something follows
                 good[:-1],                                           # cut short
                 good[:6] + (1 << 62).to_bytes(8, "little") + good[14:],   # a huge header
                 good[:14 + n] + (1 << 40).to_bytes(8, "little")):    # not a header
        path.write_bytes(blob)
        with pytest.raises(artifact.ArtifactError, match=f"{path} is a damaged"):
            lossc.load(path)
    path.write_bytes(b"LOSSC")
    with pytest.raises(artifact.ArtifactError, match=f"{path} is not a lossc artifact"):
        lossc.load(path)


@pytest.mark.parametrize("nesting", [b"[" * 100_000 + b"]" * 100_000,
                                     b'{"a": ' * 50_000 + b"1" + b"}" * 50_000])
def test_a_header_nested_too_deep_is_damaged(tmp_path, cache, nesting):
    """JSON nested past the recursion limit (it raised RecursionError out of
    lossc.load, and out of a cache lookup)."""
    path = tmp_path / "m.lossc"
    path.write_bytes(artifact.MAGIC + len(nesting).to_bytes(8, "little") + nesting)
    for trust in (False, True):
        with pytest.raises(artifact.ArtifactError, match=f"{path} is a damaged"):
            lossc.load(path, trust=trust)


# ---------------------------------------------------------------- the compile cache

def test_cache_entries_with_foreign_code_are_misses(tmp_path, cache, monkeypatch):
    marker = tmp_path / "MARKER"
    m = lossc.compile(LOGISTIC)
    entry = _model_entry(cache)
    _rewrite(entry, objects={VALUE_AND_GRAD: _system_object(marker)})
    built = _count_builds(monkeypatch)
    assert _value(lossc.compile(LOGISTIC)) == _value(m)
    assert len(built) == 1 and not marker.exists()
    # and the entry was written again, signed
    assert artifact.read_file(entry, artifact.secret(cache)).authentic


@pytest.mark.parametrize("change", ["work_size", "source_sha256", "dims_given", "dtype",
                                    "cache_key", "unit_work", "source"])
def test_a_signed_entry_must_match_what_it_is_looked_up_for(cache, monkeypatch, change):
    """The HMAC covers the header; beyond it, an entry is used only for the source,
    dims and dtype its key was computed from, and with a work size that covers its
    code's."""
    lossc.compile(LOGISTIC)
    entry = _model_entry(cache)
    header = artifact.read(entry)[0]
    fields = {"work_size": {"work_size": header["work_size"] // 2},
              "source_sha256": {"source_sha256": "0" * 64},
              "dims_given": {"dims_given": {"D": 3}},
              "dtype": {"dtype": "float32"},
              "cache_key": {"cache_key": "1" * 64},
              "unit_work": {"unit_work": {}},
              "source": {"source": "param a = 1\nloss = a\n"}}[change]
    _rewrite(entry, artifact.secret(cache), **fields)
    built = _count_builds(monkeypatch)
    lossc.compile(LOGISTIC)
    assert len(built) == 1


def test_an_entry_with_its_work_size_halved_does_not_crash(cache):
    """(It once wrote past the end of the scratch space.)"""
    code = textwrap.dedent(f"""
        import numpy as np, lossc
        from lossc.runtime import artifact
        src = {str(SAMPLES / 'mlp.loss')!r}
        m = lossc.compile(src)
        for p in lossc.Options.from_env().cache_dir.glob("*.lossc"):
            h, o = artifact.read(p)
            if "library" not in h:
                h = dict(h, work_size=h["work_size"] // 2)
                p.write_bytes(artifact.encode(h, o, None))
        m = lossc.compile(src)
        rng = np.random.default_rng(0)
        data = {{i.name: rng.normal(size=(4096,) + i.shape) for i in m.inputs}}
        for _ in range(20):
            v, g = m.value_and_grad(m.init_params(), **data)
        print(m.work_size)
        """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env=dict(os.environ, LOSSC_CACHE_DIR=str(cache)))
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) == artifact.read(_model_entry(cache))[0]["work_size"]


def test_an_entry_copied_over_another_key_is_not_used(cache):
    small = lossc.compile(LOGISTIC, dims={"D": 3})
    big = lossc.compile(LOGISTIC, dims={"D": 30})
    entries = {artifact.read(p)[0]["dims"].get("D"): p for p in cache.glob("*.lossc")
               if "library" not in artifact.read(p)[0]}
    entries[30].write_bytes(entries[3].read_bytes())
    assert lossc.compile(LOGISTIC, dims={"D": 30}).n_params == big.n_params == 31
    assert small.n_params == 4


def test_a_folder_others_can_write_is_not_used(cache, monkeypatch):
    lossc.compile(LOGISTIC)
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    cache.chmod(0o777)
    built = _count_builds(monkeypatch)
    with pytest.warns(RuntimeWarning, match="other users can write") as caught:
        lossc.compile(LOGISTIC)
        lossc.compile(LOGISTIC)
    assert len(built) == 2
    assert len([w for w in caught if str(cache) in str(w.message)]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_without_a_usable_cache_folder_models_compile_and_saves_are_unsigned(tmp_path,
                                                                            monkeypatch):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(not_a_folder))
    with pytest.warns(RuntimeWarning, match="not using the compile cache") as caught:
        m = lossc.compile(LOGISTIC)
        lossc.compile(LOGISTIC)
    assert len([w for w in caught if "not using" in str(w.message)]) == 1
    with pytest.warns(RuntimeWarning, match="is not signed"):
        m.save(tmp_path / "m.lossc")
    with pytest.warns(lossc.LosscWarning, match="recompiling"):
        assert _value(lossc.load(tmp_path / "m.lossc")) == _value(m)
    assert not_a_folder.read_text() == "a file where the cache folder should be"


def test_a_new_cache_is_private_whatever_the_umask(tmp_path):
    cache = tmp_path / "new" / "cache"
    code = ("import os, lossc\nos.umask(0)\n"
            "lossc.compile('param a = 1\\nloss = a ^ 2\\n')\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300,
                   env=dict(os.environ, LOSSC_CACHE_DIR=str(cache)))
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir()}
    assert artifact.KEY_FILE in modes and len(modes) == 2
    assert set(modes.values()) == {0o600}


def test_a_symbolic_link_in_the_cache_is_not_followed(tmp_path, cache, monkeypatch):
    lossc.compile(LOGISTIC)
    entry = _model_entry(cache)
    moved = tmp_path / "elsewhere.lossc"
    entry.rename(moved)
    entry.symlink_to(moved)
    built = _count_builds(monkeypatch)
    lossc.compile(LOGISTIC)
    assert len(built) == 1


def test_an_unsafe_key_is_refused(cache, monkeypatch):
    lossc.compile(LOGISTIC)
    key = cache / artifact.KEY_FILE
    key.chmod(0o644)
    secret = key.read_bytes()
    built = _count_builds(monkeypatch)
    with pytest.warns(RuntimeWarning, match="other users can read it"):
        lossc.compile(LOGISTIC)
    assert len(built) == 1
    # left alone: not replaced by a new key, which would unsign every saved artifact
    assert key.read_bytes() == secret and stat.S_IMODE(key.stat().st_mode) == 0o644
    with pytest.raises(artifact.ArtifactError, match="not made on this machine"):
        lossc.load(_model_entry(cache), recompile=False)


def test_an_entry_others_can_write_is_replaced_by_one_of_the_users_own(cache, monkeypatch):
    """Not used (others may have changed it; one warning): the model is compiled again
    and the new entry, private, takes its place, as for any miss."""
    import re
    lossc.compile(LOGISTIC)
    entry = _model_entry(cache)
    entry.chmod(0o666)
    built = _count_builds(monkeypatch)
    with pytest.warns(RuntimeWarning, match=re.escape(
            f"not using the cache entry {entry}: other users can write to it")):
        lossc.compile(LOGISTIC)
    assert len(built) == 1
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert entry.stat().st_uid == os.geteuid()
    lossc.compile(LOGISTIC)
    assert len(built) == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user takes root")
@pytest.mark.parametrize("what", ["entry", "key", "folder"])
def test_files_of_another_user_are_not_used(cache, monkeypatch, what):
    lossc.compile(LOGISTIC)
    path = {"entry": _model_entry(cache), "key": cache / artifact.KEY_FILE,
            "folder": cache}[what]
    os.chown(path, 54321, -1)
    built = _count_builds(monkeypatch)
    with pytest.warns(RuntimeWarning, match="belongs to another user"):
        lossc.compile(LOGISTIC)
    assert len(built) == 1


def test_a_fifo_in_place_of_an_entry_is_a_miss(cache):
    lossc.compile(LOGISTIC)
    entry = _model_entry(cache)
    entry.unlink()
    os.mkfifo(entry)
    code = f"import lossc\nprint(lossc.compile({str(LOGISTIC)!r}).n_params)\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env=dict(os.environ, LOSSC_CACHE_DIR=str(cache)))
    assert run.returncode == 0 and run.stdout.split() == ["9"], run.stderr


def test_clearing_the_cache_deletes_lossc_entries_only(tmp_path, cache):
    from click.testing import CliRunner
    from lossc.cli import main
    m = lossc.compile(LOGISTIC)
    m.save(cache / "mine.lossc")      # a user's artifact (saving fills the cache too)
    cache_entries = sorted(p.name for p in cache.glob("*.lossc") if p.name != "mine.lossc")
    (cache / "notes.txt").write_text("keep")
    (cache / ("ab" * 32 + ".lossc")).write_text("not an artifact, named like an entry")
    # a user's file that merely starts like an artifact, and a copy of a user's artifact
    # under a temporary name lossc does not make, were deleted
    (cache / ("cd" * 32 + ".lossc")).write_bytes(artifact.MAGIC + b" user data, no header")
    (cache / ".tmp-abcdefgh.lossc").write_bytes((cache / "mine.lossc").read_bytes())
    kept = ["cd" * 32 + ".lossc", ".tmp-abcdefgh.lossc"]
    # an interrupted write of lossc's own (its temporary name, a whole artifact) goes
    (cache / f".tmp-{'0f' * 8}.lossc").write_bytes((cache / cache_entries[0]).read_bytes())
    cache_entries.append(f".tmp-{'0f' * 8}.lossc")
    runner = CliRunner()
    listed = runner.invoke(main, ["cache"])
    assert listed.exit_code == 0 and f"{len(cache_entries)} cached artifacts" in listed.output
    cleared = runner.invoke(main, ["cache", "--clear"])
    assert cleared.exit_code == 0 and f"removed {len(cache_entries)} " in cleared.output
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["mine.lossc", "notes.txt", "ab" * 32 + ".lossc", artifact.KEY_FILE] + kept)
    # the key stays: artifacts saved before still verify
    assert _value(lossc.load(cache / "mine.lossc", recompile=False)) == _value(m)


def test_clearing_the_cache_deletes_writes_cut_short_by_a_killed_process(cache):
    """A process killed while it wrote an entry leaves part of it under the temporary
    name: --clear kept it for good, as it was not laid out as a whole artifact. Such a
    file is taken once it has not been written to for a minute; a user's file under
    the name, a recent one (a write that may still go on) and one of other bytes stay."""
    lossc.compile(LOGISTIC)
    (entry,) = cache.glob("*.lossc")
    whole = entry.read_bytes()
    old = time.time() - 2 * artifact.ABANDONED_AFTER
    cut = {f".tmp-{'1a' * 8}.lossc": whole[:3000], f".tmp-{'2b' * 8}.lossc": b"",
           f".tmp-{'3c' * 8}.lossc": whole[:3]}
    kept = {f".tmp-{'4d' * 8}.lossc": b"a user's notes", "notes.tmp": whole[:3000],
            f".tmp-{'5e' * 8}.lossc": whole[:3000]}
    for name, data in {**cut, **kept}.items():
        (cache / name).write_bytes(data)
        if name != f".tmp-{'5e' * 8}.lossc":
            os.utime(cache / name, (old, old))
    assert sorted(n for n, _ in artifact.cache_files(cache, delete=True)) == sorted(
        [entry.name, *cut])
    assert sorted(p.name for p in cache.iterdir()) == sorted([artifact.KEY_FILE, *kept])


def test_loading_a_cache_entry_of_lossc_s_own_code_is_refused_clearly(cache):
    """A library unit's entry (the fused Adam steps) raised KeyError: 'signature'."""
    from lossc.runtime import library
    library.unit_object("train.adam", "float64", cache)
    (entry,) = cache.glob("*.lossc")
    with pytest.raises(artifact.ArtifactError, match=r"holds lossc's own code \(train.adam\), "
                       "not a model"):
        lossc.load(entry)


def test_the_command_line_says_why_it_does_not_use_the_cache(tmp_path, cache):
    """The CLI printed lossc's warnings only, and this one is a RuntimeWarning: the
    cache was left alone without a word."""
    lossc.compile(LOGISTIC)
    cache.chmod(0o777)
    run = subprocess.run([sys.executable, "-m", "lossc.cli", "compile", str(LOGISTIC), "-o",
                          str(tmp_path / "m.lossc")], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (f"lossc: not using the compile cache {cache}: other users can write to it"
            in run.stderr.splitlines()), run.stderr


def test_the_cache_command_refuses_an_unsafe_folder(cache):
    from click.testing import CliRunner
    from lossc.cli import main
    lossc.compile(LOGISTIC)
    cache.chmod(0o777)
    for args in (["cache"], ["cache", "--clear"]):
        run = CliRunner().invoke(main, args)
        assert run.exit_code == 1 and "other users can write" in run.output
    assert any(cache.glob("*.lossc"))


def test_concurrent_processes_agree_on_one_key(cache):
    code = (f"import lossc.runtime.artifact as a\n"
            f"print(a.secret({str(cache)!r}, create=True).hex())\n")
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env=dict(os.environ, LOSSC_CACHE_DIR=str(cache)))
            for _ in range(6)]
    keys = {run.communicate(timeout=120)[0].strip() for run in runs}
    assert len(keys) == 1 and (cache / artifact.KEY_FILE).read_bytes().hex() in keys
    assert sorted(p.name for p in cache.iterdir()) == [artifact.KEY_FILE]


@pytest.mark.parametrize("where, words", [
    ("folder", "cannot write {path}: it is a folder"),
    ("", "cannot write '': the path is empty"),
    ("missing/m.lossc", "cannot write {path}: the folder {tmp}/missing does not exist"),
    ("file/m.lossc", "cannot write {path}: {tmp}/file is not a folder")])
def test_save_to_a_path_it_cannot_write_is_a_value_error_naming_it(tmp_path, cache,
                                                                   where, words):
    """(IsADirectoryError or FileNotFoundError naming lossc's temporary file beside it)"""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("kept")
    m = lossc.compile("param w\nloss = w ^ 2\n")
    path = str(tmp_path / where) if where else ""
    with pytest.raises(ValueError) as info:
        m.save(path)
    assert str(info.value) == words.format(path=path, tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "file", "folder"]
    assert (tmp_path / "file").read_text() == "kept"


@pytest.mark.parametrize("call", [lambda p: lossc.load(p, options="x"),
                                  lambda p: lossc.compile("param w\nloss = w\n", options={})])
def test_options_not_an_options_object_is_a_type_error_naming_it(tmp_path, cache, call):
    path = tmp_path / "m.lossc"
    lossc.compile("param w\nloss = w ^ 2\n").save(path)
    with pytest.raises(TypeError, match="options must be a lossc.Options"):
        call(path)


def test_an_artifact_for_other_cpu_features_names_them_not_the_cpu_twice(monkeypatch):
    """Only the features differing (a virtual machine's CPU): the reason read "compiled
    for CPU znver3 (x86_64...), this machine is znver3 (x86_64...)"."""
    from lossc.codegen.jit import host_cpu
    here = dict(host_cpu())
    features = here["features"].split(",")
    flipped = [("-" if f[0] == "+" else "+") + f[1:] if k == 0 else f
               for k, f in enumerate(features)]
    header = {"abi": artifact.ABI, "lossc_version": lossc.__version__, "host": "other",
              "cpu": dict(here, features=",".join(flipped))}
    reason = artifact.mismatch(header)
    assert reason == (f"it was compiled for CPU {here['cpu']} with other features than "
                      f"this machine's ({flipped[0]} there, {features[0][0]} here)")
