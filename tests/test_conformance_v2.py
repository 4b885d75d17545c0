"""Every case in ../shared/conformance-v2, read at test time (never copied): values,
gradients and predictions against the independent JAX references, and the error
cases' positions and wording.

A case's `hvp` and `jvp` keys (Hessian-vector product along `hvp_v`, directional
derivative along `jvp_tangent`) are checked against Model.hvp and Model.jvp.
"""
import json

import numpy as np
import pytest

import lossc
from conftest import SHARED
from test_conformance import check_error_case

CONFORMANCE_V2 = SHARED / "conformance-v2"
VALUE_CASES = sorted(CONFORMANCE_V2.glob("*.json"))
ERRORS = json.loads((CONFORMANCE_V2 / "errors" / "expected.json").read_text())
ERROR_CASES = sorted(k for k in ERRORS if not k.startswith("_"))


def test_the_shared_cases_are_there():
    assert len(VALUE_CASES) >= 14 and len(ERROR_CASES) >= 8
    expected = [json.loads(p.read_text())["expected"] for p in VALUE_CASES]
    assert sum("hvp" in e for e in expected) >= 3 and sum("jvp" in e for e in expected) >= 3


def _load(case_path):
    c = json.loads(case_path.read_text())
    m = lossc.compile(CONFORMANCE_V2 / c["model"], dims=c["dims"] or None, dtype=c["dtype"])
    params = {k: np.array(v, dtype=np.float64) for k, v in c["params"].items()}
    inputs = {k: np.array(v) for k, v in c["inputs"].items()}
    hypers = {k: np.asarray(v, dtype=np.float64) if isinstance(v, list) else v
              for k, v in c["hypers"].items()}
    return c, m, params, inputs, hypers


def _like(ref) -> dict:
    return {k: np.array(v, dtype=np.float64) for k, v in ref.items()}


def _close(got: dict, ref: dict, c: dict) -> None:
    """Gradient-like results: at least 1e-9 relative and 1e-11 absolute (README)."""
    assert set(got) == set(ref)
    for k, r in ref.items():
        r = np.array(r, dtype=np.float64)
        assert np.shape(got[k]) == r.shape, k
        np.testing.assert_allclose(got[k], r, rtol=min(c["rtol"], 1e-9),
                                   atol=min(c["atol"], 1e-11), err_msg=k)


@pytest.mark.parametrize("case", VALUE_CASES, ids=lambda p: p.stem)
def test_value_and_gradient(case):
    c, m, params, inputs, hypers = _load(case)
    exp = c["expected"]
    value, grads = m.value_and_grad(params, **inputs, **hypers)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, exp["loss"], rtol=c["rtol"], atol=c["atol"])
    _close(grads, exp["grad"], c)
    assert m.loss(params, **inputs, **hypers) == pytest.approx(value, rel=1e-13, abs=1e-13)
    if "hvp" in exp:
        _close(m.hvp(params, _like(exp["hvp_v"]), **inputs, **hypers), exp["hvp"], c)
    if "jvp" in exp:
        v, d = m.jvp(params, _like(exp["jvp_tangent"]), **inputs, **hypers)
        np.testing.assert_allclose(v, exp["loss"], rtol=c["rtol"], atol=c["atol"])
        np.testing.assert_allclose(d, exp["jvp"], rtol=min(c["rtol"], 1e-9),
                                   atol=min(c["atol"], 1e-11))


PREDICT_CASES = [p for p in VALUE_CASES
                 if "outputs" in json.loads(p.read_text())["expected"]]


@pytest.mark.parametrize("case", PREDICT_CASES, ids=lambda p: p.stem)
def test_predict(case):
    c, m, params, inputs, hypers = _load(case)
    given = {k: inputs[k] for k in c.get("predict_inputs", inputs)}
    pred = m.predict(params, **given, **hypers)
    exp = c["expected"]["outputs"]
    assert set(pred) == set(exp)
    assert [o.name for o in m.outputs] == list(pred)
    for k, ref in exp.items():
        ref = np.array(ref, dtype=np.float64)
        assert pred[k].dtype == np.float64 and pred[k].shape == ref.shape, k
        np.testing.assert_allclose(pred[k], ref, rtol=c["rtol"], atol=c["atol"], err_msg=k)


@pytest.mark.parametrize("name", ERROR_CASES)
def test_error_case(name):
    check_error_case(CONFORMANCE_V2 / "errors" / name, ERRORS[name])
