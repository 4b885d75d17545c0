"""Imbalanced binary data for focal.loss: about one positive in eight."""
import numpy as np

W, B = np.array([1.0, -1.5, 0.5, 2.0]), -3.0


def generate(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(W)))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ W + B)))).astype(float)
    return {"x": x, "y": y}, {"w": W, "b": B}


def focal_objective(theta, x, y, gamma=2.0, alpha=0.25):
    """The mean focal loss of focal.loss in NumPy, theta = (w, b), for SciPy."""
    z = x @ theta[:-1] + theta[-1]
    p = 1 / (1 + np.exp(-z))
    log_p, log_q = -np.logaddexp(0, -z), -np.logaddexp(0, z)
    return float(np.mean(-(alpha * y * (1 - p) ** gamma * log_p
                           + (1 - alpha) * (1 - y) * p ** gamma * log_q)))


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
