"""Grouped data for random_intercept.loss: 20 groups of unequal size, each with its
own intercept drawn from Normal(0, TAU^2), and noise of standard deviation SIGMA."""
import numpy as np

W, G, SIGMA, TAU = np.array([1.0, -0.5]), 20, 0.5, 1.0


def generate(n=600, seed=0):
    rng = np.random.default_rng(seed)
    a = TAU * rng.normal(size=G)
    g = rng.choice(G, size=n, p=rng.dirichlet(np.full(G, 2.0)))
    x = rng.normal(size=(n, len(W)))
    y = x @ W + a[g] + SIGMA * rng.normal(size=n)
    return {"x": x, "g": g, "y": y}, {"w": W, "a": a}


def posterior_mode(x, g, y, sigma=SIGMA, tau=TAU):
    """The exact MAP of (w, a): penalized least squares, solved as one linear system."""
    n, d = x.shape
    design = np.hstack([x, np.eye(G)[g]]) / sigma
    prior = np.diag(np.r_[np.zeros(d), np.full(G, 1 / tau ** 2)])
    theta = np.linalg.solve(design.T @ design + prior, design.T @ (y / sigma))
    return theta[:d], theta[d:]


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
