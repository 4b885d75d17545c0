"""The Python API: compile from paths and text, argument validation, artifacts, cache."""
import copy
import math
import os
import shutil
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lossc
from conftest import ROOT, SAMPLES

LOGISTIC = SAMPLES / "logistic.loss"


@pytest.fixture(scope="module")
def logistic():
    return lossc.compile(LOGISTIC, dims={"D": 4})


def _data(B=5, D=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, D)), (rng.random(B) < 0.5).astype(float)


def _numpy_logistic(theta, X, Y, lam):
    z = X @ theta["w"] + theta["b"]
    sp = np.logaddexp(0, z)
    value = np.mean(sp - Y * z) + lam * np.sum(theta["w"] ** 2)
    r = 1 / (1 + np.exp(-z)) - Y
    return value, {"w": X.T @ r / len(Y) + 2 * lam * theta["w"], "b": np.mean(r)}


def test_seed_example_from_text():
    m = lossc.compile("param x1 = 2\nparam x2 = 5\nloss = log(x1) + x1 * x2 - sin(x2)\n")
    value, g = m.value_and_grad(m.init_params())
    assert value == pytest.approx(np.log(2) + 10 - np.sin(5), rel=1e-15)
    assert g["x1"] == pytest.approx(5.5, rel=1e-15)
    assert g["x2"] == pytest.approx(2 - np.cos(5), rel=1e-15)


def test_logistic_matches_numpy(logistic):
    X, Y = _data()
    theta = logistic.init_params(seed=3)
    theta["b"] = np.array(0.3)
    for lam in (1e-3, 0.5):
        value, g = logistic.value_and_grad(theta, x=X, y=Y, lam=lam)
        ref, rg = _numpy_logistic(theta, X, Y, lam)
        assert value == pytest.approx(ref, rel=1e-13)
        np.testing.assert_allclose(g["w"], rg["w"], rtol=1e-12)
        assert float(g["b"]) == pytest.approx(rg["b"], rel=1e-12)


def test_path_rules(tmp_path):
    p = tmp_path / "m.loss"
    p.write_text("param a = 3\nloss = a ^ 2\n")
    for src in (p, str(p)):
        assert lossc.compile(src).loss({"a": 3.0}) == 9.0
    with pytest.raises(FileNotFoundError):
        lossc.compile(str(tmp_path / "missing.loss"))
    with pytest.raises(lossc.CompileError) as e:
        lossc.compile("param a = 1\nloss = b\n")
    assert str(e.value).startswith("<string>:2:8: error:")


def test_unknown_dim_names_the_declared_ones():
    with pytest.raises(ValueError, match=r"'E'.*\['D'\]"):
        lossc.compile(LOGISTIC, dims={"E": 3})


def test_init_params_shapes_and_seed(logistic):
    a, b = logistic.init_params(seed=1), logistic.init_params(seed=1)
    assert a["w"].shape == (4,) and a["b"].shape == ()
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(a["w"], logistic.init_params(seed=2)["w"])


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(x=np.zeros((5, 3)), y=np.zeros(5)), ValueError, ["'x'", "(B, 4)", "(5, 3)"]),
    (dict(x=np.zeros((5, 4)), y=np.zeros(4)), ValueError, ["batch sizes disagree"]),
    (dict(x=np.zeros((5, 4))), ValueError, ["missing input 'y'"]),
    (dict(x=np.zeros((5, 4)), y=np.zeros(5), z=1), ValueError, ["unknown argument 'z'"]),
    (dict(x=np.zeros((5, 4), dtype=complex), y=np.zeros(5)), TypeError, ["'x'", "complex"]),
    (dict(x=np.array([["a"] * 4] * 5), y=np.zeros(5)), TypeError, ["'x'"]),
    (dict(x=np.zeros((0, 4)), y=np.zeros(0)), ValueError, ["empty"]),
    (dict(x=np.zeros((5, 4)), y=np.zeros(5), lam=np.ones(2)), ValueError, ["'lam'"]),
])
def test_bad_arrays_raise_clear_errors(logistic, kwargs, exc, words):
    theta = logistic.init_params()
    with pytest.raises(exc) as e:
        logistic.value_and_grad(theta, **kwargs)
    for w in words:
        assert w in str(e.value)


def test_bad_parameters(logistic):
    X, Y = _data()
    with pytest.raises(ValueError, match="missing parameter 'b'"):
        logistic.loss({"w": np.zeros(4)}, x=X, y=Y)
    with pytest.raises(ValueError, match=r"'w' must have shape \(4,\)"):
        logistic.loss({"w": np.zeros(3), "b": 0.0}, x=X, y=Y)
    with pytest.raises(ValueError, match="unknown parameter 'v'"):
        logistic.loss({"w": np.zeros(4), "b": 0.0, "v": 1}, x=X, y=Y)


def test_non_contiguous_and_other_dtypes_are_accepted(logistic):
    X, Y = _data(B=6)
    theta = logistic.init_params(seed=4)
    ref, _ = logistic.value_and_grad(theta, x=X, y=Y)
    Xf = np.asfortranarray(X).astype(np.float32).astype(np.float64)
    big = np.zeros((6, 8))
    big[:, ::2] = X
    v1, _ = logistic.value_and_grad(theta, x=big[:, ::2], y=Y.astype(np.int32))
    assert v1 == pytest.approx(ref, rel=1e-15)
    v2, _ = logistic.value_and_grad(theta, x=Xf, y=list(Y))
    assert v2 == pytest.approx(logistic.loss(theta, x=Xf, y=Y), rel=1e-15)


SOFTMAX = "dim K = 3\ninput x[2]\ninput k: int\nparam W[K, 2] = 1\nloss = (W @ x)[k] + W[k, 0]\n"


def test_int_inputs_checked_at_call_time():
    m = lossc.compile(SOFTMAX)
    theta = m.init_params()
    x = np.ones((4, 2))
    with pytest.raises(ValueError, match=r"k = 3 is out of range 0\.\.2 at sample 2"):
        m.value_and_grad(theta, x=x, k=np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="out of range"):
        m.loss(theta, x=x, k=np.array([0, -1, 0, 0]))
    with pytest.raises(ValueError, match=r"int input 'k' holds nan at sample 1"):
        m.loss(theta, x=x, k=np.array([0, np.nan, 0, 0]))
    with pytest.raises(ValueError, match=r"holds 0.5"):
        m.loss(theta, x=x, k=np.array([0, 0.5, 0, 0]))
    v, g = m.value_and_grad(theta, x=x, k=np.array([0.0, 1, 2, 2]))
    expected = np.zeros((3, 2))
    for k in (0, 1, 2, 2):
        expected[k] += [1 + 1, 1]
    np.testing.assert_allclose(g["W"], expected / 4)


def test_unused_parameter_warns_and_gets_zero_gradient():
    with pytest.warns(lossc.LosscWarning, match="'b' does not affect the loss"):
        m = lossc.compile("param a = 1\nparam b[2] = 1\nloss = a * 3\n", cache=False)
    v, g = m.value_and_grad(m.init_params())
    np.testing.assert_array_equal(g["b"], [0, 0])
    assert g["a"] == 3


def test_save_and_load_in_another_process(tmp_path, logistic):
    path = tmp_path / "logistic.lossc"
    logistic.save(path)
    X, Y = _data()
    theta = logistic.init_params(seed=7)
    np.savez(tmp_path / "in.npz", X=X, Y=Y, **theta)
    value, g = logistic.value_and_grad(theta, x=X, y=Y)
    code = (
        "import sys, numpy as np, lossc, lossc.codegen.jit as j\n"
        "j.compile_ir = None  # loading must need no code generation\n"
        f"m = lossc.load(r'{path}')\n"
        f"d = np.load(r'{tmp_path / 'in.npz'}')\n"
        "v, g = m.value_and_grad({'w': d['w'], 'b': d['b']}, x=d['X'], y=d['Y'])\n"
        "print(repr(v)); print(repr(float(g['b'])))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    assert float(out[0]) == value
    assert float(out[1]) == float(g["b"])


def test_artifact_for_another_cpu_is_recompiled_or_refused(tmp_path, logistic):
    from lossc.runtime import artifact
    path = tmp_path / "m.lossc"
    logistic.save(path)
    header, objects = artifact.read(path)
    header["cpu"] = dict(header["cpu"], cpu="some-other-cpu")
    header["host"] = "another machine's /proc/cpuinfo"
    artifact.write(path, header, objects, lossc.Options.from_env().cache_dir)
    with pytest.raises(artifact.ArtifactError, match="some-other-cpu"):
        lossc.load(path, recompile=False)
    with pytest.warns(lossc.LosscWarning, match="recompiling"):
        m = lossc.load(path)
    X, Y = _data()
    theta = m.init_params()
    assert m.loss(theta, x=X, y=Y) == logistic.loss(theta, x=X, y=Y)
    path.write_bytes(b"not an artifact")
    with pytest.raises(artifact.ArtifactError):
        lossc.load(path)


def test_cache_makes_recompiling_in_a_new_process_fast(tmp_path):
    src = tmp_path / "c.loss"
    src.write_text((SAMPLES / "mlp.loss").read_text())
    code = ("import time, lossc\n"
            "t = time.perf_counter()\n"
            f"m = lossc.compile(r'{src}')\n"
            "print(time.perf_counter() - t, m.n_params)\n")
    env = {"LOSSC_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True,
                                 text=True, cwd=ROOT, env=env, check=True).stdout.split()
    first, second = run(), run()
    assert first[1] == second[1] == str(16 * 32 + 32 + 32 + 1)
    assert any((tmp_path / "cache").glob("*.lossc"))


def test_code_units_compile_on_first_use_and_join_the_cache(tmp_path, monkeypatch):
    """lossc.compile builds the gradient only; loss and an optimizer's training steps
    are compiled when first used, added to the cached artifact, and a new process
    then runs all of them from the cache without LLVM."""
    from lossc.codegen.units import EXPORTS
    from lossc.runtime import artifact
    from lossc.runtime.elf import supported
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(cache))
    src = tmp_path / "l.loss"
    src.write_text(LOGISTIC.read_text())
    m = lossc.compile(src, dims={"D": 4})
    (path,) = cache.glob("*.lossc")
    assert set(artifact.read(path)[1]) == {"value_and_grad"}
    X, Y = _data()
    theta = m.init_params(seed=3)
    value, grad = m.value_and_grad(theta, x=X, y=Y)
    assert m.loss(theta, x=X, y=Y) == value
    assert set(artifact.read(path)[1]) == {"value_and_grad", "loss"}
    data = {"x": X, "y": Y}
    trained = lossc.train(m, data=data, optimizer=lossc.Adam(lr=0.1), batch_size=2,
                          epochs=3, seed=1)
    # the training steps are the same for every model: an entry of their own
    assert set(artifact.read(path)[1]) == {"value_and_grad", "loss"}
    assert _library_entries(cache) == {"train.adam": "float64"}
    np.savez(tmp_path / "in.npz", X=X, Y=Y, **theta)
    code = (
        "import sys, numpy as np, lossc\n"
        "from lossc.runtime.elf import supported\n"
        "if not supported():   # (else: LLVM is never even loaded, checked below)\n"
        "    import lossc.codegen.jit as j; j.compile_ir = None  # all from the cache\n"
        f"m = lossc.compile(r'{src}', dims={{'D': 4}})\n"
        f"d = np.load(r'{tmp_path / 'in.npz'}')\n"
        "theta = {'w': d['w'], 'b': d['b']}\n"
        "v, g = m.value_and_grad(theta, x=d['X'], y=d['Y'])\n"
        "r = lossc.train(m, data={'x': d['X'], 'y': d['Y']}, optimizer=lossc.Adam(lr=0.1),"
        " batch_size=2, epochs=3, seed=1)\n"
        "print(repr(v), repr(m.loss(theta, x=d['X'], y=d['Y'])), repr(float(r.params['b'])),"
        " 'llvmlite.binding' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, env=dict(os.environ)).stdout.split()
    assert float(out[0]) == value and float(out[1]) == value
    # (equal to the last bit in every run but one seen, under heavy load, which
    # differed in the last bit and could not be reproduced)
    assert float(out[2]) == pytest.approx(float(trained.params["b"]), rel=1e-12)
    if supported() and os.environ.get("LOSSC_LOADER") != "llvm":
        assert out[3] == "False"     # LLVM was never loaded
    assert set(EXPORTS) >= {"value_and_grad", "loss", "train.adam"}


def test_a_unit_needing_more_scratch_space_gets_fresh_frames():
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data()
    theta = m.init_params()
    value, _ = m.value_and_grad(theta, x=X, y=Y)
    before = _next_frame(m)
    real = m.code._compile_unit
    m.code._compile_unit = lambda unit: (real(unit)[0], m.work_size + 1000)
    assert m.loss(theta, x=X, y=Y) == value
    assert _next_frame(m) is not before and _next_frame(m).work.size == m.work_size == \
        before.work.size + 1000


def test_units_added_by_two_models_of_one_cache_entry_are_both_kept(tmp_path, monkeypatch):
    from lossc.runtime import artifact
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path))
    lossc.compile(LOGISTIC, dims={"D": 4})
    a, b = lossc.compile(LOGISTIC, dims={"D": 4}), lossc.compile(LOGISTIC, dims={"D": 4})
    X, Y = _data()
    a.loss(a.init_params(), x=X, y=Y)
    lossc.train(b, data={"x": X, "y": Y}, optimizer=lossc.SGD(lr=0.1), batch_size=2,
                epochs=1)
    (path,) = [p for p in tmp_path.glob("*.lossc") if "library" not in artifact.read(p)[0]]
    assert set(artifact.read(path)[1]) == {"value_and_grad", "loss"}
    assert _library_entries(tmp_path) == {"train.sgd": "float64"}


def _library_entries(cache) -> dict:
    """{unit: dtype} of the cache's library entries (runtime/library.py)."""
    from lossc.runtime import artifact
    out = {}
    for p in cache.glob("*.lossc"):
        header, objects = artifact.read(p)
        if "library" in header:
            assert set(objects) == {header["library"]}
            out[header["library"]] = header["dtype"]
    return out


def test_training_steps_are_compiled_once_for_every_model(tmp_path, monkeypatch):
    """Two different models (other sizes, another input layout) share one object
    for Adam's steps, compiled once; a float32 model gets its own."""
    from lossc.runtime import library
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path))
    compiled = []
    real = library.compile_unit
    monkeypatch.setattr(library, "compile_unit",
                        lambda unit, dtype: compiled.append((unit, dtype)) or real(unit, dtype))
    X, Y = _data()
    small = lossc.compile(LOGISTIC, dims={"D": 4})
    r1 = lossc.train(small, data={"x": X, "y": Y}, optimizer=lossc.Adam(lr=0.1),
                     batch_size=3, epochs=2, seed=1)
    rng = np.random.default_rng(4)
    X9, Y9 = rng.standard_normal((7, 9)), (rng.random(7) < 0.5).astype(float)
    big = lossc.compile(LOGISTIC, dims={"D": 9})
    r2 = lossc.train(big, data={"x": X9, "y": Y9}, optimizer=lossc.Adam(lr=0.1),
                     batch_size=3, epochs=2, seed=1)
    assert compiled == [("train.adam", "float64")]
    assert small.code._object("train.adam") == big.code._object("train.adam")
    f32 = lossc.compile(LOGISTIC, dims={"D": 4}, dtype="float32")
    lossc.train(f32, data={"x": X, "y": Y}, optimizer=lossc.Adam(lr=0.1), batch_size=3,
                epochs=1, seed=1)
    assert compiled == [("train.adam", "float64"), ("train.adam", "float32")]
    # and each run matches the Python loop of the same optimizer
    from lossc.runtime import fused
    monkeypatch.setattr(fused, "supports", lambda optimizer: False)
    for m, data, r in ((small, {"x": X, "y": Y}, r1), (big, {"x": X9, "y": Y9}, r2)):
        ref = lossc.train(m, data=data, optimizer=lossc.Adam(lr=0.1), batch_size=3,
                          epochs=2, seed=1)
        for k in ref.params:
            np.testing.assert_array_equal(r.params[k], ref.params[k])


def test_the_parameters_lossc_train_steps_start_on_a_cache_line():
    """lossc.train's flat parameters (from a dict or a flat vector) start on 64 bytes,
    whatever NumPy's allocator gives: a table's rows then start lines as in the table
    (a row of 256 bytes 16 bytes into a line spans five lines and every vector load
    from it straddles two). Sizes vary so the allocator's placements vary."""
    for D in range(1, 12):
        m = lossc.compile(f"dim D = {D}\ninput x[D]\ninput y\nparam w[D]\n"
                          "loss = (dot(w, x) - y) ^ 2\n")
        seen = []
        data = {"x": np.ones((4, D)), "y": np.zeros(4)}
        flat = m.pack_params(m.init_params(D))
        before = flat.copy()
        for init in (m.init_params(D), flat):
            lossc.train(m, data, optimizer=lossc.SGD(0.01), epochs=1, batch_size=4,
                        init=init, callback=lambda info: seen.append(info.theta.ctypes.data))
        assert len(seen) == 2 and all(a % 64 == 0 for a in seen), (D, [a % 64 for a in seen])
        np.testing.assert_array_equal(flat, before)        # (a copy is trained)
        with pytest.raises(ValueError,
                           match=rf"flat vector of {D} reals, got shape \(1, {D}\)"):
            lossc.train(m, data, optimizer=lossc.SGD(0.01), epochs=1, init=flat[None])


def test_flat_parameters_resized_in_place_are_read_where_they_are(logistic):
    X, Y = _data()
    bound = logistic.bind({"x": X, "y": Y})
    theta = logistic.pack_params(logistic.init_params(1))
    logistic.value_and_grad_flat(theta, bound)
    theta.resize(1000, refcheck=False)       # a new buffer for the same array object
    theta.resize(logistic.n_params, refcheck=False)
    theta[:] = 0.5
    assert logistic.value_and_grad_flat(theta, bound)[0] == \
        logistic.value_and_grad_flat(theta.copy(), bound)[0]


def test_saved_artifact_holds_every_code_unit(tmp_path, logistic):
    from lossc.codegen.units import UNITS
    from lossc.runtime import artifact
    logistic.save(tmp_path / "m.lossc")
    header, objects = artifact.read(tmp_path / "m.lossc")
    assert set(objects) == set(UNITS) and header["work_size"] >= 1


def test_damaged_artifact_is_refused(tmp_path, logistic):
    from lossc.runtime import artifact
    path = tmp_path / "m.lossc"
    logistic.save(path)
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(artifact.ArtifactError, match="damaged"):
        lossc.load(path)
    path.write_bytes(b"LOSSC\x02" + bytes(20))
    with pytest.raises(artifact.ArtifactError):
        lossc.load(path)


def test_float32_model():
    m = lossc.compile(LOGISTIC, dims={"D": 4}, dtype="float32")
    X, Y = _data()
    theta = m.init_params(seed=3)
    assert theta["w"].dtype == np.float32
    value, g = m.value_and_grad(theta, x=X, y=Y)
    ref, rg = _numpy_logistic({k: v.astype(float) for k, v in theta.items()}, X, Y, 1e-3)
    assert value == pytest.approx(ref, rel=1e-5)
    assert g["w"].dtype == np.float32
    np.testing.assert_allclose(g["w"], rg["w"], rtol=1e-4, atol=1e-6)


def test_deep_programs_compile_or_refuse_cleanly():
    deep = "param a = 0.5\nloss = " + "(" * 1000 + "a" + ")" * 1000 + "\n"
    assert lossc.compile(deep, cache=False).loss({"a": 0.5}) == 0.5
    long_sum = "param a = 0.5\nloss = " + " + ".join(["a"] * 10000) + "\n"
    m = lossc.compile(long_sum, cache=False)
    v, g = m.value_and_grad({"a": 0.5})
    assert v == pytest.approx(5000) and g["a"] == pytest.approx(10000)


def test_independent_errors_are_reported_together():
    src = "param w = 1\nz = w $ 2\nq = (w + 1\nloss = wx * 2\n"
    with pytest.raises(lossc.CompileError) as e:
        lossc.compile(src)
    lines = [d.span.line for d in e.value.diagnostics]
    assert lines == [2, 3, 4]
    assert (e.value.line, e.value.col) == (2, 7)
    report = str(e.value)
    assert report.count("error:") == 3 and "did you mean 'w'?" in report


def test_warnings_for_unused_input_and_binding():
    with pytest.warns(lossc.LosscWarning) as rec:
        lossc.compile("input x\ninput y\nparam a = 1\nt = a * 2\nloss = a * x\n", cache=False)
    text = " ".join(str(w.message) for w in rec)
    assert "input 'y' is declared but never used" in text
    assert "'t' is computed but never used" in text
    assert "<string>:2:7: warning:" in text


def test_a_statement_that_fails_to_parse_is_not_reported_again_at_its_uses():
    src = "param w = 1\nz = (w + 1\nq = z * 2\nloss = q $ 2\n"
    with pytest.raises(lossc.CompileError) as e:
        lossc.compile(src)
    messages = [d.message for d in e.value.diagnostics]
    assert len(messages) == 2, messages
    assert "')'" in messages[0] and "'$'" in messages[1]


def test_prepared_call_reads_theta_in_place_and_writes_the_gradient(logistic):
    X, Y = _data(B=9)
    theta = logistic.pack_params(logistic.init_params(seed=3))
    g = np.zeros(logistic.n_params)
    call = logistic.prepare(theta, logistic.bind({"x": X, "y": Y}), grad_out=g)
    for _ in range(3):
        value = call()
        ref, rg = logistic.value_and_grad_flat(theta, {"x": X, "y": Y})
        assert value == ref
        np.testing.assert_array_equal(g, rg)
        theta -= 0.5 * g                  # an optimizer's step, in place
    with pytest.raises(ValueError, match="C-contiguous float64"):
        logistic.prepare(theta.astype(np.float32), {"x": X, "y": Y})
    with pytest.raises(ValueError, match="grad_out"):
        logistic.prepare(theta, {"x": X, "y": Y}, grad_out=np.zeros(3))


def test_prepared_call_reports_index_errors():
    m = lossc.compile(SOFTMAX)
    theta = m.pack_params(m.init_params())
    call = m.prepare(theta, {"x": np.ones((3, 2)), "k": np.array([0, 5, 1])})
    with pytest.raises(ValueError, match="k = 5 is out of range 0..2 at sample 1"):
        call()


# Calling again with the same input arrays reuses the last call's validated binding
# (the repeated call of runtime/callpaths.py); these tests change the arrays in place
# after it is in use, each time in a way that its checks must notice: each with the
# arrays' states read from their structs (calls.array_state) and from what NumPy
# reports of them (where the struct is not laid out as expected).

@pytest.fixture(params=["struct", "numpy"])
def array_states(request, monkeypatch):
    from lossc.runtime import calls
    if request.param == "numpy":
        monkeypatch.setattr(calls, "_LAYOUT_KNOWN", False)
    return request.param


def test_array_states_are_read_from_the_struct_on_this_numpy():
    from lossc.runtime import calls
    assert calls._LAYOUT_KNOWN
    assert type(calls.array_state(np.zeros((3, 2)))[0]) is not calls._SlowState


def test_an_array_state_changes_with_every_change_of_what_the_native_code_reads(
        array_states):
    """array_state's bytes stay equal while the array keeps its data address, shape,
    strides and dtype, and differ after any in-place change of one of them."""
    import warnings
    from lossc.runtime.calls import array_state

    def same(state):
        head, head_bytes, dims, dims_bytes, _ = state
        return head.raw == head_bytes and dims.raw == dims_bytes

    def changes(a, change):
        state = array_state(a)
        assert same(state)
        a[...] = 7                          # (the values are read anew by every call)
        assert same(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # (strides, NumPy >= 2.4)
            change(a)
        return not same(state)

    assert changes(np.zeros((6, 4)), lambda a: setattr(a, "shape", (12, 2)))
    assert changes(np.zeros((6, 4)), lambda a: setattr(a, "shape", (6, 4, 1)))
    assert changes(np.zeros((6, 4)), lambda a: a.resize((7, 4), refcheck=False))
    assert changes(np.zeros((6, 4)), lambda a: a.resize((4, 6), refcheck=False))
    assert changes(np.zeros((6, 4)), lambda a: setattr(a, "dtype", np.int64))
    assert changes(np.zeros(6), lambda a: setattr(a, "dtype", np.float32))
    assert changes(np.arange(48.0)[:20].reshape(5, 4),
                   lambda a: setattr(a, "strides", (64, 8)))
    assert changes(np.zeros(5), lambda a: a.resize(5000, refcheck=False))
    assert changes(np.array(1.5), lambda a: setattr(a, "shape", (1,)))

def _next_calls(m):
    """The frame and ways of calling the model's next call takes (a single thread's
    calls all take the same)."""
    calls = m._paths.take()
    m._paths.give(calls)
    return calls


def _next_frame(m):
    return _next_calls(m).frame


def _primed(m, theta, **data):
    """Call twice: the second call is the repeated call's."""
    m.value_and_grad(theta, **data)
    assert _next_calls(m).repeated.batch(data) is not None
    return m.value_and_grad(theta, **data)


def _fresh_result(m, theta, **data):
    """The result for copies of the arrays: never a reused binding."""
    return m.value_and_grad(theta, **{k: np.array(v) for k, v in data.items()})


def test_input_reshaped_in_place_is_validated_again(logistic, array_states):
    X, Y = _data(B=6)
    theta = logistic.init_params(seed=2)
    _primed(logistic, theta, x=X, y=Y)
    X.shape = (12, 2)                 # the same object and data, a new shape
    with pytest.raises(ValueError, match=r"'x' must have shape \(B, 4\), got \(12, 2\)"):
        logistic.value_and_grad(theta, x=X, y=Y)
    X.shape = (6, 4)
    assert logistic.value_and_grad(theta, x=X, y=Y)[0] == _fresh_result(logistic, theta,
                                                                           x=X, y=Y)[0]


def test_input_resized_in_place_is_validated_again(logistic, array_states):
    X, Y = _data(B=5)
    theta = logistic.init_params(seed=2)
    _primed(logistic, theta, x=X, y=Y)
    X.resize((7, 4), refcheck=False)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        logistic.value_and_grad(theta, x=X, y=Y)
    Y.resize(7, refcheck=False)
    v, g = logistic.value_and_grad(theta, x=X, y=Y)
    fv, fg = _fresh_result(logistic, theta, x=X, y=Y)
    assert v == fv
    np.testing.assert_array_equal(g["w"], fg["w"])


def test_input_resized_to_another_shape_of_its_size_is_validated_again(logistic,
                                                                       array_states):
    """ndarray.resize to as many elements keeps the data where it is and rewrites only
    the shape and strides, in the block of them the array already has."""
    X, Y = _data(B=6)
    theta = logistic.init_params(seed=2)
    _primed(logistic, theta, x=X, y=Y)
    address = X.__array_interface__["data"][0]
    X.resize((4, 6), refcheck=False)
    assert X.__array_interface__["data"][0] == address
    with pytest.raises(ValueError, match=r"'x' must have shape \(B, 4\), got \(4, 6\)"):
        logistic.value_and_grad(theta, x=X, y=Y)


def test_input_resized_away_and_back_is_read_where_it_is_now(logistic, array_states):
    """Resizing and then resizing back gives the same shape, strides and dtype, but the
    data has moved: the binding must not keep the old, freed address."""
    X, Y = _data(B=5)
    theta = logistic.init_params(seed=2)
    _primed(logistic, theta, x=X, y=Y)
    X.resize((5000, 4), refcheck=False)
    X.resize((5, 4), refcheck=False)
    X[:] = 0.25
    v, g = logistic.value_and_grad(theta, x=X, y=Y)
    fv, fg = _fresh_result(logistic, theta, x=X, y=Y)
    assert v == fv
    np.testing.assert_array_equal(g["w"], fg["w"])


def test_a_bad_int_vector_element_is_named_by_its_sample_and_position():
    """The message gave the element's place in the flattened (B, L) array as its sample
    (sample 16 of 9)."""
    m = lossc.compile("dim L = 6\ninput tok[L]: int\nparam E[50, 2] = 0.1\n"
                      "loss = sum(E[tok])\n")
    tok = np.zeros((9, 6))
    tok[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"'tok' holds nan at sample 2, position 4;"):
        m.value_and_grad(m.init_params(), tok=tok)
    tok = np.zeros((9, 6), np.uint64)
    tok[3, 2] = 2 ** 64 - 1
    with pytest.raises(ValueError, match=r"at sample 3, position 2; does not fit"):
        m.loss(m.init_params(), tok=tok)


@pytest.mark.parametrize("call, name", [
    (lambda m, t: m.loss(t, x=[[1, 2], [3]]), "input 'x'"),
    (lambda m, t: m.loss(t, x=np.ones((2, 2)), h=[[1, 2], [3]]), "hyperparameter 'h'"),
    (lambda m, t: m.loss({"w": [[1], [2, 3]]}, x=np.ones((2, 2))), "parameter 'w'"),
    (lambda m, t: m.hvp(t, {"w": [[1], [2, 3]]}, x=np.ones((2, 2))), "parameter 'w'"),
    (lambda m, t: m.loss_flat([[1], [2, 3]], {"x": np.ones((2, 2))}), "flat parameters"),
])
def test_a_ragged_sequence_is_a_value_error_naming_the_argument(call, name):
    """NumPy's own error ("setting an array element with a sequence") named nothing."""
    m = lossc.compile("input x[2]\nparam w[2] = 0.1\nhyper h[2] = [1, 2]\n"
                      "loss = dot(w * h, x)\n")
    with pytest.raises(ValueError, match=re.escape(name) + " must be an array, got a ragged"):
        call(m, m.init_params())


def test_input_dtype_changed_in_place_is_validated_again(array_states):
    m = lossc.compile(SOFTMAX)
    theta = m.init_params()
    x = np.ones((4, 2))
    k = np.array([0, 1, 2, 1])
    _primed(m, theta, x=x, k=k)
    k.dtype = np.float64              # the same bytes, now read as (tiny) floats
    with pytest.raises(ValueError, match="int input 'k' holds .* it must hold integers"):
        m.value_and_grad(theta, x=x, k=k)
    k.dtype = np.int64
    x.dtype = np.int64                # same shape, another dtype: converted again
    v, g = m.value_and_grad(theta, x=x, k=k)
    fv, fg = _fresh_result(m, theta, x=x, k=k)
    assert v == fv
    np.testing.assert_array_equal(g["W"], fg["W"])


def test_input_strides_changed_in_place_are_validated_again(logistic, array_states):
    import warnings
    buf = np.arange(48.0) / 48
    X = buf[:20].reshape(5, 4)        # C-contiguous: bound as it is
    Y = np.zeros(5)
    theta = logistic.init_params(seed=2)
    _primed(logistic, theta, x=X, y=Y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # (NumPy >= 2.4)
            X.strides = (64, 8)       # every other row of buf, the same data address
    except AttributeError:
        pytest.skip("this NumPy cannot set strides")
    v, _ = logistic.value_and_grad(theta, x=X, y=Y)
    assert v == _fresh_result(logistic, theta, x=X, y=Y)[0]


def test_same_inputs_with_other_hyperparameters(logistic):
    X, Y = _data()
    theta = logistic.init_params(seed=3)
    for lam in (1e-3, 0.5, 0.5, 1, np.float64(0.25), 0.25):
        value, g = logistic.value_and_grad(theta, x=X, y=Y, lam=lam)
        ref, rg = _numpy_logistic(theta, X, Y, float(lam))
        assert value == pytest.approx(ref, rel=1e-13)
        np.testing.assert_allclose(g["w"], rg["w"], rtol=1e-12)
    value, _ = logistic.value_and_grad(theta, x=X, y=Y)          # the default again
    assert value == pytest.approx(_numpy_logistic(theta, X, Y, 1e-3)[0], rel=1e-13)
    with pytest.raises(ValueError, match="'lam' must be a real number"):
        logistic.value_and_grad(theta, x=X, y=Y, lam=np.ones(1))


def test_a_hyperparameter_of_minus_zero_is_not_taken_for_zero():
    """The reuse of the last call's binding tells 0.0 from -0.0 (1/h differs)."""
    m = lossc.compile("input x\nparam w = 1\nhyper h = 1\nloss = w * x / h\n", cache=False)
    x = np.array([1.0, 2.0])
    assert m.loss({"w": 1.0}, x=x, h=0.0) == np.inf
    assert m.loss({"w": 1.0}, x=x, h=-0.0) == -np.inf
    assert m.loss({"w": 1.0}, x=x, h=-0.0) == -np.inf


def test_gradients_are_the_callers_own_arrays():
    """Each call returns new arrays: a later call does not change an earlier result, and
    changing a result does not change the next one."""
    m = lossc.compile("dim K = 3\ninput x[2]\nparam W[K, 2] = 1\nparam c[K]\nparam b\n"
                      "loss = sum(W @ x + c) * b + b ^ 2\n", cache=False)
    x = np.arange(8.0).reshape(4, 2)
    theta = {"W": np.ones((3, 2)), "c": np.zeros(3), "b": 0.5}
    v1, g1 = m.value_and_grad(theta, x=x)
    kept = {k: a.copy() for k, a in g1.items()}
    assert g1["W"].shape == (3, 2) and g1["c"].shape == (3,) and g1["b"].shape == ()
    assert all(type(a) is np.ndarray and a.dtype == np.float64 for a in g1.values())
    v2, g2 = m.value_and_grad(dict(theta, b=2.0), x=x)
    assert v2 != v1
    for k in kept:
        np.testing.assert_array_equal(g1[k], kept[k])
        assert not np.shares_memory(g1[k], g2[k])
        g2[k][...] = -1
    v3, g3 = m.value_and_grad(dict(theta, b=2.0), x=x)
    assert v3 == v2 and float(g3["b"]) == float(kept["b"]) + 3


def test_parameter_forms_accepted_for_scalars_vectors_and_matrices():
    m = lossc.compile(SOFTMAX.replace("param W[K, 2] = 1", "param W[K, 2] = 1\nparam s\n"
                                      "param v[2]").replace("W[k, 0]", "W[k, 0] * s + dot(v, x)"),
                      cache=False)
    x, k = np.ones((4, 2)), np.array([0, 1, 2, 2])
    W = np.arange(6.0).reshape(3, 2) / 4      # (exact in float32 too)
    base = {"W": W, "s": 0.5, "v": np.array([0.25, -0.5])}
    ref, rg = m.value_and_grad(base, x=x, k=k)
    forms = [{"s": 0.5}, {"s": np.float64(0.5)}, {"s": np.float32(0.5)}, {"s": np.array(0.5)},
             {"s": np.array(0.5, np.float32)}, {"W": np.asfortranarray(W)}, {"W": W.tolist()},
             {"W": W.astype(np.float32)}, {"W": np.repeat(W, 2, axis=1)[:, ::2]}, {"v": [0.25, -0.5]},
             {"v": np.array([0.25, 9, -0.5, 9])[::2]}, {"v": np.array([1, -2]) / 4}]
    for change in forms:
        v, g = m.value_and_grad(dict(base, **change), x=x, k=k)
        assert v == ref, change
        for name in rg:
            np.testing.assert_array_equal(g[name], rg[name])
    assert m.value_and_grad(dict(base, s=1), x=x, k=k)[0] == \
        m.value_and_grad(dict(base, s=1.0), x=x, k=k)[0]
    for change, exc, text in [
            ({"s": [0.5]}, ValueError, r"'s' must have shape \(\), got \(1,\)"),
            ({"s": 1j}, TypeError, "'s' must hold real numbers"),
            ({"W": W.T}, ValueError, r"'W' must have shape \(3, 2\), got \(2, 3\)"),
            ({"W": W.astype(complex)}, TypeError, "'W' must hold real numbers"),
            ({"v": 0.5}, ValueError, r"'v' must have shape \(2,\), got \(\)"),
            # arrays of the model's dtype (copied through a memoryview, whose assignment
            # takes one value for a scalar and refuses other shapes for a vector)
            ({"s": np.array([0.5])}, ValueError, r"'s' must have shape \(\), got \(1,\)"),
            ({"v": np.zeros(3)}, ValueError, r"'v' must have shape \(2,\), got \(3,\)"),
            ({"v": np.zeros((1, 2))}, ValueError, r"'v' must have shape \(2,\), got \(1, 2\)"),
            ({"W": np.zeros((1, 2))}, ValueError, r"'W' must have shape \(3, 2\), got \(1, 2\)")]:
        with pytest.raises(exc, match=text):
            m.value_and_grad(dict(base, **change), x=x, k=k)
    flat = m.pack_params(base)
    back = m.unpack_params(flat)
    assert back["W"].shape == (3, 2) and back["s"].shape == () and back["v"].shape == (2,)
    np.testing.assert_array_equal(m.pack_params(back), flat)
    out = np.zeros(m.n_params)
    assert m.pack_params(base, out=out) is out
    np.testing.assert_array_equal(out, flat)


def test_array_addresses_are_those_numpy_reports():
    """_addr reads an array's data address from its struct (where the layout is the one
    checked at import) and data_pointer reads it again later: both agree with NumPy's
    __array_interface__ for arrays of every kind, read-only ones and subclasses
    included, and data_pointer follows the data when ndarray.resize moves it."""
    from lossc.runtime.calls import _addr, data_pointer

    class Sub(np.ndarray):
        pass

    base = np.arange(12.0)
    frozen = base[3:]
    frozen.flags.writeable = False
    arrays = [base, frozen, base[::3], np.zeros((2, 3), np.int32)[1], np.array(1.5),
              np.empty(0), base.view(Sub), np.frombuffer(b"abcdefgh"),
              np.ma.masked_array(base), np.zeros(3, object)]
    for a in arrays:
        assert _addr(a) == a.__array_interface__["data"][0] == data_pointer(a).value
    grown = np.zeros(4)
    pointer = data_pointer(grown)
    grown.resize(1 << 16, refcheck=False)
    assert pointer.value == _addr(grown) == grown.__array_interface__["data"][0]


def test_pack_params_into_out_checks_out():
    """`out` is written in place through views of it, so it must be what grad_out must
    be: a writable C-contiguous vector of n_params in the model's dtype. An int64 `out`
    took every value truncated (0.5 became 0), one of another length raised IndexError,
    a 2-D one a broadcasting error, a list TypeError."""
    m = lossc.compile("dim D = 3\ninput x[D]\nparam w[D]\nparam b\nloss = dot(w, x) + b\n",
                      cache=False)
    theta = {"w": np.arange(3.0), "b": np.array(0.5)}
    flat = m.pack_params(theta)
    np.testing.assert_array_equal(flat, [0, 1, 2, 0.5])
    out = np.zeros(4)
    assert m.pack_params(theta, out=out) is out
    np.testing.assert_array_equal(out, [0, 1, 2, 0.5])
    read_only = np.zeros(4)
    read_only.flags.writeable = False
    for bad in (np.zeros(4, np.int64), np.zeros(4, np.float32), np.zeros(4, ">f8"),
                np.zeros(4, object), np.zeros(3), np.zeros(5), np.zeros((4, 1)),
                np.zeros((1, 4)), np.zeros(8)[::2], read_only, [0.0] * 4):
        with pytest.raises(ValueError, match=r"^out must be a writable C-contiguous "
                                             r"float64 array of shape \(4,\)$"):
            m.pack_params(theta, out=bad)
        if isinstance(bad, np.ndarray):
            assert not bad.any()                # nothing written
    m32 = lossc.compile("dim D = 3\ninput x[D]\nparam w[D]\nparam b\nloss = dot(w, x) + b\n",
                        dtype="float32", cache=False)
    out = np.zeros(4, np.float32)
    assert m32.pack_params(theta, out=out) is out
    np.testing.assert_array_equal(out, [0, 1, 2, 0.5])
    with pytest.raises(ValueError, match="out must be .* float32"):
        m32.pack_params(theta, out=np.zeros(4))


def test_calls_from_several_threads_get_their_own_results(logistic):
    import threading
    work = []
    for seed in range(4):
        X, Y = _data(B=5 + seed, seed=seed)
        theta = logistic.init_params(seed=seed)
        work.append((theta, X, Y, logistic.value_and_grad(theta, x=X, y=Y)))
    failures = []

    def run(theta, X, Y, expected):
        for _ in range(300):
            v, g = logistic.value_and_grad(theta, x=X, y=Y)
            if v != expected[0] or not np.array_equal(g["w"], expected[1]["w"]):
                failures.append(v)

    threads = [threading.Thread(target=run, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


INTERRUPTED_THREADED_CALLS = """
import random, signal, numpy as np, lossc
m = lossc.compile("dim D = 42000\\ninput x\\nparam w[D]\\nloss = x * sum(w ^ 2)\\n",
                  cache=False)
m.set_threads(2, min_samples_per_thread=2)
bound = m.bind({"x": np.ones(256)})

def interrupt(*_):
    raise KeyboardInterrupt

signal.signal(signal.SIGALRM, interrupt)
interrupted, delays = 0, random.Random(7)
for _ in range(2000):
    theta = np.full(m.n_params, 0.5)       # 336 kB: freeing it unmaps its pages
    try:
        signal.setitimer(signal.ITIMER_REAL, delays.uniform(0.00002, 0.001))
        m.value_and_grad_flat(theta, bound)
    except KeyboardInterrupt:
        interrupted += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    del theta
value, grad = m.value_and_grad_flat(np.full(m.n_params, 0.5), bound)
print(interrupted, value, grad[0])
"""


def test_threaded_calls_interrupted_by_ctrl_c_leave_the_process_whole():
    """KeyboardInterrupt while a call waits for its worker threads: the call returns
    with tasks still running. The next call freed the parameters they read (the process
    crashed with SIGSEGV): each task now holds them. An interrupt inside the thread
    pool's own locked sections left a lock held, and the process hung, mid-run or at
    exit (runtime/workers.py): interrupts at many moments of 2000 calls."""
    # (one lane: the scratch space of each of the three frames is then about D values)
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_THREADED_CALLS], cwd=ROOT,
                         capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, LOSSC_VECTOR_BITS="64"))
    assert run.returncode == 0, run.stderr[-2000:]
    interrupted, value, grad = run.stdout.split()
    assert int(interrupted) >= 1         # (the interrupts came during the calls)
    assert float(value) == 10_500.0 and float(grad) == 1.0


def test_a_saved_model_trains_in_a_new_process_without_llvm(tmp_path):
    """Model.save writes every unit, the shuffle's native code included: a new process
    with an empty cache (but this user's key) loads the artifact and trains (epochs of
    3000 samples, drawn by the native shuffle) without loading LLVM, to the parameters
    of this process."""
    from lossc.runtime import artifact
    from lossc.runtime.elf import supported
    if not supported() or os.environ.get("LOSSC_LOADER") == "llvm":
        pytest.skip("loading without LLVM takes lossc's ELF loader")
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=3000)
    here = lossc.train(m, data={"x": X, "y": Y}, optimizer=lossc.Adam(lr=0.05),
                       batch_size=64, epochs=3, seed=2)
    m.save(tmp_path / "m.lossc")
    np.savez(tmp_path / "d.npz", X=X, Y=Y)
    (tmp_path / "empty").mkdir(mode=0o700)
    shutil.copy(lossc.Options.from_env().cache_dir / artifact.KEY_FILE, tmp_path / "empty")
    code = (
        "import sys, numpy as np, lossc\n"
        f"m = lossc.load(r'{tmp_path / 'm.lossc'}')\n"
        f"d = np.load(r'{tmp_path / 'd.npz'}')\n"
        "r = lossc.train(m, data={'x': d['X'], 'y': d['Y']}, optimizer=lossc.Adam(lr=0.05),"
        " batch_size=64, epochs=3, seed=2)\n"
        "print(repr(float(r.params['b'])), 'llvmlite.binding' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True,
                         env=dict(os.environ, LOSSC_CACHE_DIR=str(tmp_path / "empty"))
                         ).stdout.split()
    assert float(out[0]) == float(here.params["b"]) and out[1] == "False"


def test_a_model_compiled_without_cache_leaves_the_cache_alone(tmp_path, monkeypatch):
    """cache=False: neither the model nor the shared code it trains with (the steps,
    the shuffle) is written to the persistent cache."""
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path))
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=3000)
    lossc.train(m, data={"x": X, "y": Y}, optimizer=lossc.Adam(lr=0.05), batch_size=64,
                epochs=2, seed=2)
    assert not list(tmp_path.glob("*"))


# ---------------------------------------------------------------- the repeated call

def _checked(m, theta, **data):
    """The result through every check: a copy of the model (frames of its own, nothing
    remembered), copies of the arrays."""
    return copy.copy(m).value_and_grad({k: np.array(v) for k, v in theta.items()},
                                       **{k: np.array(v) for k, v in data.items()})


def _same(a, b):
    assert a[0] == b[0] or (np.isnan(a[0]) and np.isnan(b[0]))
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert type(a[1][k]) is np.ndarray and a[1][k].shape == b[1][k].shape
        np.testing.assert_array_equal(a[1][k], b[1][k])


def _count_checked_binds(m, monkeypatch) -> list:
    """A list that grows by one for each batch a checked call of m binds."""
    from lossc.runtime.callpaths import CheckedCall
    bound, real = [], CheckedCall.bind
    monkeypatch.setattr(CheckedCall, "bind", lambda self, kwargs: (
        self.model is m and bound.append(1)) or real(self, kwargs))
    return bound


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_repeated_call_gives_the_checked_results_bit_for_bit(dtype, monkeypatch):
    models = [
        (lossc.compile(LOGISTIC, dims={"D": 4}, dtype=dtype, cache=False),
         lambda rng: {"x": rng.normal(size=(37, 4)), "y": (rng.random(37) < 0.5) * 1.0}),
        (lossc.compile(SOFTMAX, dtype=dtype, cache=False),
         lambda rng: {"x": rng.normal(size=(9, 2)), "k": rng.integers(0, 3, 9)}),
        (lossc.compile(SAMPLES / "seed.loss", dtype=dtype, cache=False), lambda rng: {})]
    rng = np.random.default_rng(5)
    for m, make in models:
        data = {k: v.astype(dtype) if v.dtype.kind == "f" else v
                for k, v in make(rng).items()}
        theta = m.init_params(seed=1)
        theta = {k: np.asarray(v, dtype=dtype) for k, v in theta.items()}
        _primed(m, theta, **data)
        binds = _count_checked_binds(m, monkeypatch)
        for step in range(4):
            got = m.value_and_grad(theta, **data)
            _same(got, _checked(m, theta, **data))
            for k, v in theta.items():       # an optimizer's update, in place
                v -= 0.1 * got[1][k].astype(dtype)
            if step == 2:                    # and new arrays
                theta = {k: v.copy() for k, v in theta.items()}
        for k in data:                       # the inputs changed in place are read anew
            if data[k].dtype.kind == "f":
                data[k][...] = data[k][::-1]
        _same(m.value_and_grad(theta, **data), _checked(m, theta, **data))
        assert binds == []
        monkeypatch.undo()


def test_the_repeated_call_leaves_anything_unusual_to_the_checked_way(monkeypatch):
    m = lossc.compile(SOFTMAX.replace("param W[K, 2] = 1", "param W[K, 2] = 1\nparam s\n"
                                      "hyper h = 1").replace("W[k, 0]", "W[k, 0] * s * h"),
                      cache=False)
    x, k = np.ones((6, 2)) / 3, np.array([0, 1, 2, 2, 1, 0])
    W = np.arange(6.0).reshape(3, 2) / 4
    theta = {"W": W, "s": np.array(0.5)}
    _primed(m, theta, x=x, k=k)

    class Sub(np.ndarray):
        pass

    # parameters in any form the checked call takes: the batch is still the same one
    forms = [{"s": 0.5}, {"s": np.float32(0.5)}, {"s": np.array(0.5, np.float32)},
             {"W": np.asfortranarray(W)}, {"W": W.tolist()}, {"W": W.astype(np.float32)},
             {"W": np.repeat(W, 2, axis=1)[:, ::2]}, {"W": W.view(Sub)},
             {"W": W.astype(">f8")}]
    binds = _count_checked_binds(m, monkeypatch)
    for change in forms:
        got = m.value_and_grad(dict(theta, **change), x=x, k=k)
        _same(got, _checked(m, {"W": W, "s": np.array(0.5)}, x=x, k=k))
        _same(m.value_and_grad(theta, x=x, k=k), got)          # and back
    assert binds == []
    # (other values each time: a stale binding would give another result)
    for kwargs in [dict(x=x * 2, k=k), dict(x=x, k=k[::-1].copy()),
                   dict(x=x, k=(k[::-1] + 0).astype(np.int32)),
                   dict(x=np.asfortranarray(x * 3), k=k), dict(x=x, k=k, h=2.0)]:
        got = m.value_and_grad(theta, **kwargs)
        h = kwargs.pop("h", 1.0)
        want = m.value_and_grad({"W": W.copy(), "s": 0.5},
                                **{n: np.array(v) for n, v in kwargs.items()}, h=h)
        _same(got, want)
    for bad, exc, text in [
            (dict(theta=dict(theta, s=[0.5])), ValueError, r"'s' must have shape \(\)"),
            (dict(theta={"W": W}), ValueError, "missing parameter 's'"),
            (dict(theta=dict(theta, t=1.0)), ValueError, "unknown parameter 't'"),
            (dict(theta=[W, 0.5]), TypeError, "parameters must be a dict"),
            (dict(theta=dict(theta, W=W[:2])), ValueError, r"'W' must have shape \(3, 2\)")]:
        m.value_and_grad(theta, x=x, k=k)
        with pytest.raises(exc, match=text):
            m.value_and_grad(bad["theta"], x=x, k=k)
    with pytest.raises(ValueError, match="missing input 'k'"):
        m.value_and_grad(theta, x=x)
    with pytest.raises(ValueError, match="unknown argument 'z'"):
        m.value_and_grad(theta, x=x, k=k, z=x)
    _same(m.value_and_grad(theta, x=x, k=k), _checked(m, theta, x=x, k=k))


def test_the_repeated_call_reports_index_errors_with_the_sample(array_states):
    m = lossc.compile(SOFTMAX, cache=False)
    theta = m.init_params()
    x, k = np.ones((5, 2)), np.array([0, 1, 2, 1, 0])
    _primed(m, theta, x=x, k=k)
    k[3] = 7                                  # in place: the same binding, a bad index
    with pytest.raises(ValueError, match=r"k = 7 is out of range 0\.\.2 at sample 3"):
        m.value_and_grad(theta, x=x, k=k)
    k[3] = 2
    _same(m.value_and_grad(theta, x=x, k=k), _checked(m, theta, x=x, k=k))


def test_the_repeated_call_splits_a_large_batch_across_threads(logistic, monkeypatch):
    from lossc.runtime import callpaths
    X, Y = _data(B=21)
    theta = logistic.init_params(seed=4)
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    _primed(m, theta, x=X, y=Y)
    m.set_threads(2, min_samples_per_thread=4)
    chunks = []
    real = callpaths.CallPaths._run_parallel
    monkeypatch.setattr(callpaths.CallPaths, "_run_parallel",
                        lambda self, fn, f: chunks.append(f.bound.B) or real(self, fn, f))
    v, g = m.value_and_grad(theta, x=X, y=Y)
    assert chunks == [21]
    want = _checked(logistic, theta, x=X, y=Y)
    assert v == pytest.approx(want[0], rel=1e-14)
    np.testing.assert_allclose(g["w"], want[1]["w"], rtol=1e-13)


def test_the_flat_repeated_call_gives_the_checked_results_and_checks_its_vectors(logistic):
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=13)
    bound = m.bind({"x": X, "y": Y})
    theta = m.pack_params(m.init_params(seed=5))
    g = np.empty(m.n_params)
    m.value_and_grad_flat(theta, bound, grad_out=g)
    assert _next_calls(m).repeated.flat_bound is bound

    def checked(t):
        return copy.copy(m).value_and_grad_flat(np.array(t, dtype=np.float64),
                                                m.bind({"x": X, "y": Y}))

    for step in range(3):
        v, out = m.value_and_grad_flat(theta, bound, grad_out=g)
        want = checked(theta)
        assert out is g and v == want[0]
        np.testing.assert_array_equal(g, want[1])
        v2, fresh = m.value_and_grad_flat(theta, bound)
        assert v2 == v and fresh is not g
        np.testing.assert_array_equal(fresh, g)
        theta -= 0.3 * g                      # in place
    for other in [theta.astype(np.float32), theta.tolist(), np.repeat(theta, 2)[::2],
                  np.asarray(theta, dtype=">f8")]:
        v, out = m.value_and_grad_flat(other, bound, grad_out=g)
        want = checked(np.asarray(other, dtype=np.float64))
        assert v == pytest.approx(want[0], rel=1e-6)
    with pytest.raises(ValueError, match=r"flat parameters must have shape \(5,\)"):
        m.value_and_grad_flat(theta[:4], bound)
    for bad_out in [np.empty(5, np.float32), np.empty(4), np.empty(10)[::2],
                    np.frombuffer(np.zeros(5).tobytes())]:
        with pytest.raises(ValueError, match="grad_out must be a writable C-contiguous"):
            m.value_and_grad_flat(theta, bound, grad_out=bad_out)
    with pytest.raises(ValueError, match="theta_flat and grad_out share memory"):
        m.value_and_grad_flat(theta, bound, grad_out=theta)
    with pytest.raises(ValueError, match="grad_out and input 'y' share memory"):
        m.value_and_grad_flat(theta, bound, grad_out=bound.arrays[1][:5])
    v, _ = m.value_and_grad_flat(theta, bound, hypers={"lam": 0.5})
    assert v == pytest.approx(_numpy_logistic(m.unpack_params(theta), X, Y, 0.5)[0],
                              rel=1e-13)


def test_a_model_without_inputs_repeats_its_flat_call():
    """A model without inputs has one batch: its flat calls without data take the
    repeated call from the second on, and give what the checked call gives, reading the
    parameters as they are at each call."""
    src = "param x1 = 2\nparam x2 = 5\nloss = log(x1) + x1 * x2 - sin(x2)\n"
    m = lossc.compile(src, cache=False)
    theta, g = m.pack_params(m.init_params()), np.empty(2)
    m.value_and_grad_flat(theta, grad_out=g)
    assert _next_calls(m).repeated.flat_bound is m._no_inputs
    for step in range(3):
        v, out = m.value_and_grad_flat(theta, grad_out=g)
        x1, x2 = theta
        assert out is g and v == pytest.approx(math.log(x1) + x1 * x2 - math.sin(x2),
                                               rel=1e-15)
        np.testing.assert_allclose(g, [1 / x1 + x2, x1 - math.cos(x2)], rtol=1e-15)
        v2, fresh = m.value_and_grad_flat(theta)
        assert v2 == v and fresh is not g
        np.testing.assert_array_equal(fresh, g)
        theta += 0.25                           # in place
    with pytest.raises(ValueError, match="theta_flat and grad_out share memory"):
        m.value_and_grad_flat(theta, grad_out=theta)
    with pytest.raises(ValueError, match=r"flat parameters must have shape \(2,\)"):
        m.value_and_grad_flat(theta[:1])


def test_hypers_beside_a_bound_batch_set_only_those_they_name():
    """hypers= with a bind() result replaced every hyper of the batch: those not named
    went back to the file's defaults (c = 10 became 1), for the flat calls, prepare,
    loss_flat, hvp_flat and bind itself."""
    m = lossc.compile("input x\nparam a\nhyper lam = 1\nhyper c = 1\n"
                      "loss = c * (a - x) ^ 2 + lam * a ^ 2\n", cache=False)
    x, flat = np.array([1.0, 2.0, 3.0]), np.array([0.5])
    bound = m.bind({"x": x}, hypers={"c": 10.0})
    want = m.loss({"a": 0.5}, x=x, c=10.0, lam=2.0)
    assert m.value_and_grad_flat(flat, bound, hypers={"lam": 2.0})[0] == want
    assert m.loss_flat(flat, bound, hypers={"lam": 2.0}) == want
    assert m.prepare(flat.copy(), bound, hypers={"lam": 2.0})() == want
    assert m.loss_flat(flat, m.bind(bound, {"lam": 2.0})) == want
    np.testing.assert_array_equal(m.hvp_flat(flat, np.ones(1), bound, hypers={"lam": 2.0}),
                                  [2 * 10.0 + 2 * 2.0])
    assert m.loss_flat(flat, bound) == m.loss({"a": 0.5}, x=x, c=10.0)      # (unchanged)
    h = m.scipy_hessp(x=x, hypers={"lam": 2.0})          # (as scipy_objective takes it)
    np.testing.assert_array_equal(h(np.array([0.5]), np.array([1.0])), [6.0])


@pytest.mark.parametrize("call, words", [
    (lambda m, x: m.bind({"x": x}, hypers=[("lam", 1.0)]), "hypers must be a dict"),
    (lambda m, x: m.hvp_flat(np.zeros(1), np.ones(1), {"x": x}, hypers=["lam"]),
     "hypers must be a dict"),
    (lambda m, x: m.scipy_objective(x=x, hypers=[1.0]), "hypers must be a dict"),
    (lambda m, x: m.scipy_hessp(x=x, hypers=(1.0,)), "hypers must be a dict"),
    (lambda m, x: m.unpack_params(np.array([3j])), "flat parameters must hold real numbers"),
    (lambda m, x: m.unpack_params("abc"), "flat parameters must hold real numbers"),
    (lambda m, x: m.unpack_params({"a": 1.0}), "flat parameters must hold real numbers"),
])
def test_wrong_types_are_errors_naming_the_argument(call, words):
    """An AttributeError from hypers.items(), a complex vector unpacked as zeros, a
    float() error: each is a TypeError naming what was wrong."""
    m = lossc.compile("input x\nparam a\nhyper lam = 1\nloss = (a - x) ^ 2 + lam * a ^ 2\n",
                      cache=False)
    with pytest.raises(TypeError, match=words):
        call(m, np.array([1.0, 2.0]))


def test_seeds_numpy_does_not_take_are_a_value_error_naming_seed():
    m = lossc.compile("param a = normal(0, 1)\nloss = a ^ 2\n", cache=False)
    for call in (lambda: m.init_params("a"), lambda: m.scipy_objective(seed=-1)):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            call()


def test_pack_params_into_out_reads_values_that_are_views_of_it():
    m = lossc.compile("input x[2]\nparam a[2]\nparam b[2]\nloss = dot(a, x) + dot(b, x)\n",
                      cache=False)
    out = np.array([1.0, 2.0, 3.0, 4.0])
    assert m.pack_params({"a": out[2:4], "b": out[0:2]}, out=out) is out
    np.testing.assert_array_equal(out, [3.0, 4.0, 1.0, 2.0])      # (was 3, 4, 3, 4)


def test_the_flat_repeated_call_checks_vectors_that_moved_or_changed_in_place():
    """A parameter vector or grad_out found apart from the rest once is trusted to stay
    so only while it is the same array at the same address: resized in place (which
    moves the data) or reshaped, it is checked again."""
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=13)
    bound = m.bind({"x": X, "y": Y})
    theta, g = m.pack_params(m.init_params(seed=5)), np.empty(m.n_params)
    want = m.value_and_grad_flat(theta, bound, grad_out=g)[0]
    assert m.value_and_grad_flat(theta, bound, grad_out=g)[0] == want
    g.resize(4000, refcheck=False)
    g.resize(5, refcheck=False)           # the same shape, the data moved
    assert m.value_and_grad_flat(theta, bound, grad_out=g)[0] == want
    np.testing.assert_array_equal(g, copy.copy(m).value_and_grad_flat(theta, bound)[1])
    theta.resize(4, refcheck=False)
    with pytest.raises(ValueError, match=r"flat parameters must have shape \(5,\)"):
        m.value_and_grad_flat(theta, bound, grad_out=g)
    g.shape = (5, 1)
    theta.resize(5, refcheck=False)
    with pytest.raises(ValueError, match="grad_out must be a writable C-contiguous"):
        m.value_and_grad_flat(theta, bound, grad_out=g)


def test_the_flat_repeated_call_reports_index_errors():
    m = lossc.compile(SOFTMAX, cache=False)
    x, k = np.ones((5, 2)), np.array([0, 1, 2, 1, 0])
    bound = m.bind({"x": x, "k": k})
    theta = m.pack_params(m.init_params())
    m.value_and_grad_flat(theta, bound)
    assert _next_calls(m).repeated.flat_bound is bound
    k[2] = -1                       # the bound array, in place
    with pytest.raises(ValueError, match=r"k = -1 is out of range 0\.\.2 at sample 2"):
        m.value_and_grad_flat(theta, bound)


def test_checked_flat_calls_leave_the_repeated_call_alone():
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=9)
    theta = m.pack_params(m.init_params(seed=1))
    bound = m.bind({"x": X, "y": Y})
    m.value_and_grad_flat(theta, bound)
    other = m.bind({"x": X[1:], "y": Y[1:]})
    for _ in range(2):
        m.checked_value_and_grad_flat(theta, other)
    assert _next_calls(m).repeated.flat_bound is bound


def test_a_frame_used_through_grad_out_gives_later_calls_their_own_gradient():
    """The repeated flat call writes the gradient straight into grad_out; any call after
    it on the same frame (checked, of the objective, on threads) gets its own."""
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=40)
    bound = m.bind({"x": X, "y": Y})
    theta, g = m.pack_params(m.init_params(seed=3)), np.zeros(m.n_params)
    m.value_and_grad_flat(theta, bound, grad_out=g)
    m.value_and_grad_flat(theta, bound, grad_out=g)
    kept = g.copy()
    _, fresh = m.value_and_grad_flat(theta + 1, m.bind({"x": X, "y": Y}))
    v, grads = m.value_and_grad(m.unpack_params(theta + 1), x=X, y=Y)
    np.testing.assert_array_equal(g, kept)
    np.testing.assert_array_equal(fresh, m.pack_params(grads))



def test_a_repeated_keyword_call_after_flat_calls_sets_its_frame_up_again(monkeypatch):
    """The repeated keyword call skips setting its frame up when the frame is still as
    it left it; flat calls in between point the frame at their own parameter vector,
    grad_out and batch (the repeated flat call uses them where they are), so the
    keyword call after them must point it back, and must not write into grad_out."""
    m = lossc.compile(LOGISTIC, dims={"D": 4}, cache=False)
    X, Y = _data(B=11)
    theta = m.init_params(seed=2)
    _primed(m, theta, x=X, y=Y)
    binds = _count_checked_binds(m, monkeypatch)
    other = m.bind({"x": X[1:], "y": Y[1:]})
    flat, g = m.pack_params(theta) + 1, np.zeros(m.n_params)
    for _ in range(2):                        # (the second one is the repeated flat call)
        m.value_and_grad_flat(flat, other, grad_out=g)
        kept = g.copy()
        got = m.value_and_grad(theta, x=X, y=Y)
        assert binds == []                    # the keyword call was the repeated one
        np.testing.assert_array_equal(g, kept)
        _same(got, _checked(m, theta, x=X, y=Y))


# ---------------------------------------------------------------- dims and copies

def test_dims_of_any_integer_type_are_accepted():
    m = lossc.compile(LOGISTIC, dims={"D": np.int64(3)})
    assert m.n_params == 4 and lossc.compile(LOGISTIC, dims={"D": 3}).n_params == 4


@pytest.mark.parametrize("value", [2 ** 63, 2 ** 70])
def test_dims_past_64_bits_are_refused_as_in_the_source(value):
    """`dim D = 2^70` in the source is an error; given in dims= it compiled (its
    sizes past what the generated code's 64-bit integers hold)."""
    with pytest.raises(lossc.CompileError, match=f"dim 'D' = {value} is too large"):
        lossc.compile(LOGISTIC, dims={"D": value}, cache=False)


@pytest.mark.parametrize("value", [True, 3.0, 2.5, "3", None])
def test_dims_that_are_not_integers_are_refused(value):
    with pytest.raises(ValueError, match=f"dim 'D' must be an integer, got {value!r}"):
        lossc.compile(LOGISTIC, dims={"D": value}, cache=False)


@pytest.mark.parametrize("dims", ["D", 5, [("D", 3)]])
def test_dims_not_a_mapping_are_a_type_error_naming_dims(dims):
    """(an AttributeError: 'str' object has no attribute 'items')"""
    with pytest.raises(TypeError, match=f"dims must be a dict of dim names and sizes .*, "
                                        f"got {type(dims).__name__}"):
        lossc.compile(LOGISTIC, dims=dims, cache=False)


def test_copies_of_a_model_share_its_code_and_exit_quietly():
    code = textwrap.dedent(f"""
        import copy, numpy as np, lossc
        m = lossc.compile({str(LOGISTIC)!r}).set_threads(1)
        deep, shallow = copy.deepcopy(m), copy.copy(m)
        deep.set_threads(2)
        rng = np.random.default_rng(0)
        data = {{"x": rng.normal(size=(5, 8)), "y": np.ones(5)}}
        theta = m.init_params()
        values = {{c.loss(theta, **data) for c in (m, deep, shallow)}}
        print(len(values), deep.code is m.code, m.threads, deep.threads)
        """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout.split() == ["1", "True", "1", "2"]


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("dtype", [None, 32, "float16", "f4", np.float16])
def test_a_dtype_lossc_does_not_compile_for_is_a_value_error_naming_it(dtype, cache):
    """With or without the cache (whose key once took the dtype as text first)."""
    with pytest.raises(ValueError, match=r"dtype must be one of \('float64', 'float32'\)"):
        lossc.compile(LOGISTIC, dtype=dtype, cache=cache)


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.dtype("float32")])
def test_numpys_names_of_float32_compile_a_float32_model(dtype, cache):
    m = lossc.compile(LOGISTIC, dtype=dtype, cache=cache)
    assert m.dtype == np.float32 and m.meta["dtype"] == "float32"


BOUND_BY_ANOTHER_MODEL = """
import numpy as np, lossc
src = "dim D = {D}\\ninput x[D]\\ninput y\\nparam w\\nloss = (w * sum(x) - y) ^ 2\\n"
small = lossc.compile(src.replace("{D}", "2"), cache=False)
large = lossc.compile(src.replace("{D}", str(10 ** 7)), cache=False)
bound = small.bind({"x": np.ones((3, 2)), "y": np.zeros(3)})
for call in (lambda: large.value_and_grad_flat(np.ones(1), bound),
             lambda: large.loss_flat(np.ones(1), bound),
             lambda: large.prepare(np.ones(1), bound)(),
             lambda: large.hvp_flat(np.ones(1), np.ones(1), bound),
             lambda: large.bind(bound, hypers={})):
    try:
        call()
        print("ran")
    except ValueError as e:
        print(e)
"""


def test_data_bound_by_another_model_is_refused_not_read_past_its_end():
    """x bound as (3, 2) by one model, read by another whose x is (3, 10^7): the
    native code would read 240 MB past the array (and crash, in a subprocess)."""
    out = subprocess.run([sys.executable, "-c", BOUND_BY_ANOTHER_MODEL], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("data was bound by another model")
                                   for line in lines), out.stdout


def test_data_bound_by_a_copy_or_a_model_of_the_same_inputs_is_taken():
    src = "dim D = 3\ninput x[D]\ninput y\nparam w[D]\nloss = (sum(w * x) - y) ^ 2\n"
    m = lossc.compile(src)
    twin, again = copy.copy(m), lossc.compile(src)
    rng = np.random.default_rng(3)
    bound = m.bind({"x": rng.normal(size=(6, 3)), "y": np.ones(6)})
    flat = rng.normal(size=m.n_params)
    want = m.value_and_grad_flat(flat, bound)
    for other in (twin, again):
        value, grad = other.value_and_grad_flat(flat, bound)
        assert value == want[0]
        np.testing.assert_array_equal(grad, want[1])
    f32 = lossc.compile(src, dtype="float32")
    with pytest.raises(ValueError, match="data was bound by another model"):
        f32.value_and_grad_flat(flat.astype(np.float32), bound)


def test_init_params_of_a_parameter_past_the_machine_memory_names_it():
    """(NumPy's _ArrayMemoryError "Unable to allocate 128 EiB", naming no parameter)"""
    from lossc.memory import MemoryLimitError
    m = lossc.compile("dim N = 4294967296\nparam W[N, N]\nparam b\nloss = b + sum(W)\n",
                      cache=False)
    with pytest.raises(MemoryLimitError, match=r"parameter 'W' of shape \(4294967296, "
                                               r"4294967296\) and dtype float64 needs"):
        m.init_params()


def test_uniform_init_wider_than_the_largest_float_draws_inside_its_bounds():
    """uniform(-1e308, 1e308): NumPy's uniform raised OverflowError (the width is inf)."""
    m = lossc.compile("param w[1000] = uniform(-1e308, 1e308)\nloss = sum(w)\n", cache=False)
    w = m.init_params(seed=3)["w"]
    assert np.all(np.isfinite(w)) and w.min() < -5e307 and w.max() > 5e307
    np.testing.assert_array_equal(w, m.init_params(seed=3)["w"])


@pytest.mark.parametrize("hypers", [{"lam": 1e39}, {"v": [1.0, -1e39]}])
def test_a_finite_hyper_beyond_float32_is_refused_by_name(hypers):
    """1e39 for a float32 model became an infinity without a word (data past float32's
    range is refused); a NaN or an infinity is taken as given (docs/language.md: a flat
    prior is tau = inf), and a float64 model takes 1e39 as it is."""
    src = ("input x\nparam w\nhyper lam = 1\nhyper v[2] = 1\n"
           "loss = (w * x) ^ 2 + lam * w ^ 2 + sum(v)\n")
    m64 = lossc.compile(src, cache=False)
    assert np.isfinite(m64.loss({"w": np.array(1.0)}, x=np.ones(3), **hypers))
    m = lossc.compile(src, dtype="float32", cache=False)
    theta, x = {"w": np.array(1.0, "float32")}, np.ones(3, "float32")
    name = next(iter(hypers))
    words = f"hyperparameter '{name}' is {'-' if name == 'v' else ''}1e+39, beyond float32"
    for call in (lambda: m.value_and_grad(theta, x=x, **hypers),
                 lambda: m.loss(theta, x=x, **hypers),
                 lambda: m.bind({"x": x}, hypers=hypers),
                 lambda: m.prepare(m.pack_params(theta), {"x": x}, hypers=hypers)):
        with pytest.raises(ValueError, match=re.escape(words)):
            call()
    assert np.isnan(m.loss(theta, x=x, lam=np.nan))
    assert m.loss(theta, x=x, lam=np.inf) == np.inf
