"""Every case in ../shared/conformance, read at test time: values and gradients against
the independent JAX references, and the error cases' positions and wording."""
import json
import re

import numpy as np
import pytest

import lossc
from conftest import CONFORMANCE

VALUE_CASES = sorted(p for p in CONFORMANCE.glob("*.json"))
ERRORS = json.loads((CONFORMANCE / "errors" / "expected.json").read_text())
ERROR_CASES = sorted(k for k in ERRORS if not k.startswith("_"))


def test_the_shared_cases_are_there():
    assert len(VALUE_CASES) >= 20 and len(ERROR_CASES) >= 12


def _run(case_path, dtype):
    c = json.loads(case_path.read_text())
    m = lossc.compile(CONFORMANCE / c["model"], dims=c["dims"] or None, dtype=dtype)
    params = {k: np.array(v, dtype=float) for k, v in c["params"].items()}
    inputs = {k: np.array(v) for k, v in c["inputs"].items()}
    value, grads = m.value_and_grad(params, **inputs, **c["hypers"])
    return c, m, value, grads


@pytest.mark.parametrize("case", VALUE_CASES, ids=lambda p: p.stem)
def test_value_and_gradient_float64(case):
    c, m, value, grads = _run(case, c_dtype(case))
    exp = c["expected"]
    assert isinstance(value, float)
    np.testing.assert_allclose(value, exp["loss"], rtol=c["rtol"], atol=c["atol"])
    grad_rtol = min(c["rtol"], 1e-9)
    assert set(grads) == set(exp["grad"])
    for k, ref in exp["grad"].items():
        ref = np.array(ref, dtype=float)
        assert grads[k].shape == ref.shape, k
        np.testing.assert_allclose(grads[k], ref, rtol=grad_rtol, atol=c["atol"], err_msg=k)
    # the objective alone agrees with the objective that comes with the gradient
    inputs = {k: np.array(v) for k, v in c["inputs"].items()}
    params = {k: np.array(v, dtype=float) for k, v in c["params"].items()}
    assert m.loss(params, **inputs, **c["hypers"]) == pytest.approx(value, rel=1e-13, abs=1e-13)


def c_dtype(case):
    return json.loads(case.read_text())["dtype"]


@pytest.mark.parametrize("case", VALUE_CASES, ids=lambda p: p.stem)
def test_value_and_gradient_float32(case):
    c, m, value, grads = _run(case, "float32")
    exp = c["expected"]
    scale = max(1.0, abs(exp["loss"]))
    assert abs(value - exp["loss"]) <= 1e-4 * scale
    for k, ref in exp["grad"].items():
        ref = np.array(ref, dtype=float)
        assert grads[k].dtype == np.float32
        tol = 1e-3 * max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(grads[k], ref, rtol=1e-3, atol=tol, err_msg=k)


@pytest.mark.parametrize("name", ERROR_CASES)
def test_error_case(name):
    check_error_case(CONFORMANCE / "errors" / name, ERRORS[name])


def check_error_case(path, spec: dict) -> None:
    """An error case of a conformance folder (v1's or v2's): the CompileError's line,
    column range and words as the case says, reported as file:line:col with the line
    and a caret."""
    name = path.name
    with pytest.raises(lossc.CompileError) as info:
        lossc.compile(path, dims=spec.get("dims"))
    e = info.value
    if spec["line"] is not None:
        assert e.line == spec["line"], str(e)
    if "cols" in spec:
        lo, hi = spec["cols"]
        assert lo <= e.col <= hi, str(e)
    for word in spec["contains"]:
        assert word.lower() in e.message.lower(), (word, e.message)
    report = str(e)
    first = report.splitlines()
    # file:line:col: error: message / the line / a caret under the span
    assert re.match(rf".*{re.escape(name)}:{e.line}:{e.col}: error: ", first[0]), first[0]
    source_line = path.read_text().splitlines()[e.line - 1]
    assert first[1].strip() == source_line.strip()
    caret = first[2]
    assert caret.strip().startswith("^")
    assert caret.index("^") - 4 == e.col - 1
