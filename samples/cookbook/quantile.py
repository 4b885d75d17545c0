"""Data for quantile.loss: a linear mean and heteroscedastic noise whose scale grows
with x[0], so the 0.9-quantile line differs from the mean line."""
import numpy as np
from statistics import NormalDist

W, B = np.array([2.0, -1.0, 0.5]), 1.0
SCALE, SLOPE = 1.0, 0.5            # the noise's standard deviation: SCALE + SLOPE * x[0]


def generate(n=2000, seed=0, tau=0.9):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 2, size=(n, len(W)))
    y = x @ W + B + (SCALE + SLOPE * x[:, 0]) * rng.normal(size=n)
    z = NormalDist().inv_cdf(tau)
    # the true tau-quantile: x @ W + B + z (SCALE + SLOPE x[0])
    w_tau = W + np.array([SLOPE * z, 0.0, 0.0])
    return {"x": x, "y": y}, {"w": w_tau, "b": B + SCALE * z}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
