"""Ratings for matrix_factorization.loss: a rank-3 user-by-item matrix plus biases, n
of its U * I = 1200 entries (default 720, 60%) observed with noise. The truth is the
whole noiseless matrix."""
import numpy as np

U, I, F = 40, 30, 3
NOISE = 0.1


def generate(n=720, seed=0):
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(U, F)), rng.normal(size=(I, F))
    biases = rng.normal(scale=0.5, size=(U, 1)) + rng.normal(scale=0.5, size=(1, I))
    full = P @ Q.T + biases + 3
    u, i = np.divmod(np.sort(rng.choice(U * I, size=n, replace=False)), I)
    r = full[u, i] + NOISE * rng.normal(size=len(u))
    return {"u": u, "i": i, "r": r}, {"ratings": full}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
