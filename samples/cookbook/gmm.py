"""Samples of a mixture of three well-separated 2-d Gaussians with diagonal
covariances, for gmm.loss."""
import numpy as np

MU = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
S = np.array([[1.0, 0.5], [0.7, 0.7], [0.5, 1.2]])
WEIGHTS = np.array([0.5, 0.3, 0.2])


def generate(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    x = MU[k] + S[k] * rng.normal(size=(n, MU.shape[1]))
    return {"x": x}, {"mu": MU, "s": S, "weights": WEIGHTS}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
