"""Linearly separable-ish data for svm.loss: labels from the sign of a linear score
plus logistic noise."""
import numpy as np

W = np.array([1.5, -2.0, 0.5, 0.0, 1.0])


def generate(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(W)))
    y = (x @ W + rng.logistic(scale=0.5, size=n) > 0).astype(float)
    return {"x": x, "y": y}, {"w": W}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
