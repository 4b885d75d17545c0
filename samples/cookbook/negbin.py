"""Overdispersed counts for negbin.loss: NB2 with mean exp(x @ W + B) and dispersion
ALPHA (variance mu + ALPHA mu^2), drawn as a gamma-Poisson mixture."""
import numpy as np

W, B, ALPHA = np.array([0.5, -0.3, 0.2]), 1.0, 0.5


def generate(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(W)))
    mu = np.exp(x @ W + B)
    rate = rng.gamma(shape=1 / ALPHA, scale=ALPHA * mu)      # mean mu, var ALPHA mu^2
    count = rng.poisson(rate).astype(float)
    return {"x": x, "count": count}, {"w": W, "b": B, "log_alpha": np.log(ALPHA)}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
