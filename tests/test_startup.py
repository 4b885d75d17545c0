"""Start-up: `import lossc` loads neither LLVM (llvmlite) nor sympy nor SciPy, and a
model from the compile cache, in a new process, is loaded without the compiler or
llvmlite's binding (lossc's ELF loader maps the cached object itself). Each case runs
in a new interpreter, whose sys.modules says what was imported."""
import json
import subprocess
import sys
import textwrap

import pytest

import lossc
from conftest import ROOT
from lossc.runtime import elf

SOURCE = ("dim D = 3\ninput x[D]\ninput y\nparam w[D] = 0.5\nparam b\n"
          "z = dot(w, x) + b\nloss = softplus(z) - y * z\n")
HEAVY = ("llvmlite", "llvmlite.binding", "sympy", "scipy", "lossc.compiler",
         "lossc.codegen.units", "lossc.optim", "lossc.ir.ops")


def _python(code: str, **env) -> dict:
    """Run `code` in a new interpreter; its last line of output, as JSON."""
    import os
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                       capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, **env))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_lossc_loads_neither_llvm_nor_sympy_nor_scipy():
    loaded = _python(f"""
        import json, sys
        import lossc
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """)
    assert loaded == []


def test_lossc_optim_is_there_on_first_use_after_a_plain_import():
    """docs/training.md calls lossc.optim.l1_weights right after `import lossc`: the
    submodule is imported on first use, as the lazy names are."""
    loaded = _python("""
        import json, sys
        import lossc
        before = "lossc.optim" in sys.modules
        print(json.dumps([before, callable(lossc.optim.l1_weights)]))
        """)
    assert loaded == [False, True]


def test_scikit_learn_is_imported_by_lossc_sklearn_alone():
    loaded = _python("""
        import json, sys
        import lossc, lossc.optim
        before = "sklearn" in sys.modules
        import lossc.sklearn
        print(json.dumps([before, "sklearn" in sys.modules]))
        """)
    assert loaded == [False, True]


@pytest.mark.skipif(not elf.supported(), reason="lossc's ELF loader does not apply here")
def test_a_cached_model_loads_without_the_compiler_or_llvm(tmp_path):
    code = f"""
        import json, sys
        import numpy as np
        import lossc
        m = lossc.compile({SOURCE!r})
        X, Y = np.ones((5, 3)), np.ones(5)
        value, grads = m.value_and_grad(m.init_params(), x=X, y=Y)
        print(json.dumps({{"value": value, "b": float(grads["b"]),
                          "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    first = _python(code, LOSSC_CACHE_DIR=str(tmp_path))      # compiles, fills the cache
    assert "lossc.compiler" in first["loaded"]
    again = _python(code, LOSSC_CACHE_DIR=str(tmp_path))
    # (llvmlite itself, a few lines, gives its version to the cache's CPU check)
    assert [m for m in again["loaded"] if m != "llvmlite"] == []
    assert (again["value"], again["b"]) == (first["value"], first["b"])


@pytest.mark.skipif(not elf.supported(), reason="lossc's ELF loader does not apply here")
def test_cached_predictions_load_without_the_compiler_or_llvm(tmp_path):
    source = SOURCE + "output p = sigmoid(z)\n"
    code = f"""
        import json, sys
        import numpy as np
        import lossc
        m = lossc.compile({source!r})
        p = m.predict(m.init_params(), x=np.ones((5, 3)))["p"]
        print(json.dumps({{"p": p.tolist(),
                          "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    first = _python(code, LOSSC_CACHE_DIR=str(tmp_path))
    assert "lossc.compiler" in first["loaded"]
    again = _python(code, LOSSC_CACHE_DIR=str(tmp_path))
    assert [m for m in again["loaded"] if m != "llvmlite"] == []
    assert again["p"] == first["p"]


def test_the_memory_functions_the_elf_loader_allows_by_itself_are_allowed():
    """runtime/elf.py allows memcpy and memset without importing the op table that
    codegen/externals.py derives the rest from: they must be in ALLOWED."""
    from lossc.codegen.externals import ALLOWED
    assert elf.MEMORY_FUNCTIONS <= ALLOWED


def test_the_training_names_come_from_lossc_optim_when_first_used():
    from lossc import optim
    from lossc.optim import laplace
    for name in ("train", "TrainResult", "SGD", "RMSprop", "Adam", "AdamW", "LBFGS",
                 "NewtonCG", "save_params", "load_params"):
        assert getattr(lossc, name) is getattr(optim, name)
        assert name in dir(lossc) and name in lossc.__all__
    for name in ("laplace", "Laplace", "LaplaceError"):
        assert getattr(lossc, name) is getattr(laplace, name)
        assert name in dir(lossc) and name in lossc.__all__
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lossc.nothing


def test_training_imports_dask_only_for_dask_data(tmp_path):
    """In-memory data, memory-mapped chunks and NPY chunk files train without Dask;
    a dask array brings it in (lossc[dask] is optional)."""
    code = f"""
        import json, sys
        import numpy as np
        import lossc
        from lossc.optim import LBFGS
        from lossc.optim.chunked import in_chunks
        m = lossc.compile({SOURCE!r})
        data = {{"x": np.ones((20, 3)), "y": np.ones(20)}}
        for k, lo in enumerate(range(0, 20, 8)):
            for name in data:
                folder = {str(tmp_path)!r} + "/" + name
                __import__("os").makedirs(folder, exist_ok=True)
                np.save(folder + f"/{{k}}.npy", data[name][lo:lo + 8])
        lossc.train(m, data=data, epochs=1)
        lossc.train(m, data=in_chunks(data, 8), optimizer=LBFGS(), epochs=1)
        lossc.train(m, data={str(tmp_path)!r}, optimizer=LBFGS(), epochs=1)
        m.value_and_grad(m.init_params(), **data)
        before = [n for n in ("dask", "distributed") if n in sys.modules]
        import dask.array as da
        lossc.train(m, data={{"x": da.from_array(data["x"], chunks=(8, 3)), "y": data["y"]}},
                    optimizer=LBFGS(), epochs=1)
        print(json.dumps(before))
        """
    assert _python(code) == []
