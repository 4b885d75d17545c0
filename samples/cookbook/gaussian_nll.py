"""Data for gaussian_nll.loss: y = x @ W + B + exp(x @ V + C) * standard normal noise."""
import numpy as np

W, B = np.array([1.0, -2.0, 0.5]), 0.5
V, C = np.array([0.3, 0.0, -0.4]), -0.5


def generate(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(W)))
    y = x @ W + B + np.exp(x @ V + C) * rng.normal(size=n)
    return {"x": x, "y": y}, {"w": W, "b": B, "v": V, "c": C}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
