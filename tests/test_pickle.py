"""Pickled models: what the pickle holds (source, dims, dtype, options; no machine
code), the round trip, and a tampered state refused before anything compiles."""
import copyreg
import io
import pickle

import numpy as np
import pytest

import lossc
from lossc.runtime import pickled

SOURCE = ("dim D = 3\ninput x[D]\ninput y\nparam w[D] = normal(0, 1)\nparam b\n"
          "hyper lam = 0.01\nz = dot(w, x) + b\nloss = softplus(z) - y * z\n"
          "penalty = lam * sum(w ^ 2)\n")


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 3)), "y": rng.integers(0, 2, n).astype(float)}


def test_round_trip_gives_the_same_values_and_gradients():
    m = lossc.compile(SOURCE, dtype="float64")
    twin = pickle.loads(pickle.dumps(m))
    theta, data = m.init_params(1), _data()
    v, g = m.value_and_grad(theta, **data, lam=0.5)
    v2, g2 = twin.value_and_grad(theta, **data, lam=0.5)
    assert v == v2
    for k in g:
        assert np.array_equal(g[k], g2[k])
    assert twin.loss(theta, **data) == m.loss(theta, **data)
    assert (twin.dtype, twin.threads, repr(twin)) == (m.dtype, m.threads, repr(m))


def test_dims_dtype_and_threads_travel():
    m = lossc.compile(SOURCE.replace("dim D = 3", "dim D = 2"), dims={"D": 3},
                      dtype="float32").set_threads(1, 1000)
    twin = pickle.loads(pickle.dumps(m))
    assert twin.dtype == np.float32 and twin.params[0].shape == (3,)
    assert (twin.threads, twin.min_samples_per_thread) == (1, 1000)


def test_a_default_thread_count_is_the_unpickling_processs_own(monkeypatch):
    """A model left at the default thread count (one per core) was unpickled with the
    sender's count, also in a process pinned to fewer cores; a count asked for
    travels as it is."""
    from lossc import options
    m = lossc.compile(SOURCE)
    monkeypatch.setattr(options, "available_cores", lambda: 7)
    assert pickle.loads(pickle.dumps(m)).threads == 7
    m.set_threads(3)
    assert pickle.loads(pickle.dumps(m)).threads == 3
    assert pickle.loads(pickle.dumps(m.set_threads(None))).threads == 7


def test_the_pickle_holds_no_machine_code():
    m = lossc.compile(SOURCE)
    m.code.complete()                  # every code unit compiled and held by the model
    blob = pickle.dumps(m)
    assert b"\x7fELF" not in blob
    # the source and a few names: far less than one object file
    assert len(blob) < len(SOURCE) + 1000
    assert min(len(o) for o in m.code.objects.values()) > len(blob)


def test_a_model_without_source_is_refused_clearly():
    from lossc.compiler import compile_source
    graph = compile_source(lossc.source.Source(SOURCE, "<t>"), {}, "float64").graph
    m = lossc.api.compile_graph(graph)
    with pytest.raises(TypeError, match="compiled from a graph"):
        pickle.dumps(m)


def _tampered(change) -> bytes:
    """A pickle of a model whose state `change` altered (as someone editing the bytes
    would), still naming lossc.api.model_from_pickle."""
    m = lossc.compile(SOURCE)
    state = pickled.state_of(m)
    change(state)
    out = io.BytesIO()
    p = pickle.Pickler(out)
    p.dispatch_table = copyreg.dispatch_table.copy()
    p.dispatch_table[type(m)] = lambda model: (lossc.api.model_from_pickle, (state,))
    p.dump(m)
    return out.getvalue()


@pytest.mark.parametrize("change, words", [
    (lambda s: s.update(objects={"lossc_value_and_grad": b"\x7fELF\x02\x01"}), "fields"),
    (lambda s: s.update(source=b"\x7fELF"), "source"),
    (lambda s: s.update(source="x" * (17 << 20)), "source"),
    (lambda s: s.update(dtype="int8"), "dtype"),
    (lambda s: s.update(vector_bits=1024), "vector width"),
    (lambda s: s.update(loader="mine"), "loader"),
    (lambda s: s.update(dims={"D": "3; import os"}), "dim"),
    (lambda s: s.update(source=s["source"] + "# \ud800"), "source is not valid text"),
    (lambda s: s.update(name="m\udfff.loss"), "name is not valid text"),
])
def test_a_tampered_state_is_refused_without_compiling_or_loading(change, words,
                                                                  monkeypatch):
    import lossc.api
    blob = _tampered(change)

    def no_compile(*a, **k):
        raise AssertionError("compiled a tampered state")
    monkeypatch.setattr(lossc.api, "compile", no_compile)
    with pytest.raises(ValueError, match=words):
        pickle.loads(blob)


def test_a_state_with_other_source_compiles_that_source_and_nothing_else():
    # the source is all a pickle can choose: what it runs is what the compiler makes
    blob = _tampered(lambda s: s.update(source=SOURCE.replace("softplus(z)", "2 * softplus(z)")))
    twin = pickle.loads(blob)
    m = lossc.compile(SOURCE)
    theta, data = m.init_params(), _data()
    lam0 = {"lam": 0.0}
    assert twin.loss(theta, **data, **lam0) != pytest.approx(m.loss(theta, **data, **lam0))
