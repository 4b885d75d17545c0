"""Models of many shapes, compiled and compared with the reference interpreter (each op's
NumPy semantics, sample by sample) for the objective and with its central differences
for the gradient: sizes of 1, sizes that are not multiples of the SIMD width, batches
around every lane, group and block boundary, both dtypes."""
import numpy as np
import pytest

import lossc
from lossc.compiler import front_end, read_source
from lossc.ir.evaluate import objective

TEMPLATES = {
    "mlp": """
input x[D]
input y
param W1[H, D] = normal(0, 0.5)
param b1[H] = normal(0, 0.1)
param w2[H] = normal(0, 0.5)
h = tanh(W1 @ x + b1)
loss = (dot(w2, h) - y) ^ 2 + 0.01 * norm(W1)
""",
    "softmax": """
input x[D]
input k: int
param W[H, D] = normal(0, 0.5)
z = W @ x
loss = logsumexp(z) - z[k] + 0.1 * sum(softmax(z) * log_softmax(z))
""",
    "matrix": """
input X[H, D]
input v[D]
param A[D, H] = normal(0, 0.5)
param c[H] = normal(0, 0.5)
P = X @ A
loss = sum(P * transpose(P)) / (H * H) + max(X @ v) + min(c @ X) + prod(sigmoid(c)) + mean(relu(X - c[0]), axis=1)[0]
""",
    "slices": """
input x[D]
param p[D] = normal(0, 1)
q = p * x
loss = sum(q[:D - 1] * q[1:]) + softplus(q[0]) + sum(abs(q[D - 1:]))
reduce sum
""",
}
SIZES = [(1, 1), (1, 3), (2, 1), (3, 5), (9, 2), (4, 17)]


def data_for(model, B, rng):
    out = {}
    for s in model.inputs:
        if s.is_int:
            out[s.name] = rng.integers(0, model.signature.dims["H"], size=B)
        else:
            out[s.name] = rng.normal(size=(B,) + s.shape)
    return out


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("D, H", SIZES)
def test_compiled_model_matches_the_reference_interpreter(name, D, H):
    if name == "slices" and D < 2:
        pytest.skip("q[:D-1] is an empty slice, a compile error, when D = 1")
    src = f"dim D = {D}\ndim H = {H}\n" + TEMPLATES[name]
    graph, _ = front_end(read_source(src))
    rng = np.random.default_rng(D * 100 + H)
    for dtype, rtol in (("float64", 1e-10), ("float32", 2e-4)):
        m = lossc.compile(src, dtype=dtype)
        theta = {k: v.astype(np.float64) for k, v in m.init_params(seed=D + H).items()}
        for B in (1, 7, 9, 16, 17, 64, 65, 130):
            data = data_for(m, B, rng)
            value, grads = m.value_and_grad(theta, **data)
            ref = objective(graph, theta, data)
            assert value == pytest.approx(ref, rel=rtol, abs=rtol), (dtype, B)
            if dtype == "float32" or B not in (9, 65):
                continue
            for pname, g in grads.items():
                flat = theta[pname].reshape(-1)
                for j in range(min(flat.size, 6)):
                    h = 1e-6
                    up = {k: v.copy() for k, v in theta.items()}
                    down = {k: v.copy() for k, v in theta.items()}
                    up[pname].reshape(-1)[j] += h
                    down[pname].reshape(-1)[j] -= h
                    fd = (objective(graph, up, data) - objective(graph, down, data)) / (2 * h)
                    assert g.reshape(-1)[j] == pytest.approx(fd, rel=1e-5, abs=1e-7), \
                        (pname, j, B)
