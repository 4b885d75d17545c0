"""Data for autoencoder.loss: points near a 2-d plane in 8 dimensions (a rank-2 signal
plus small isotropic noise, shifted off the origin)."""
import numpy as np

D, K = 8, 2


def generate(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(D, K)))[0] * np.array([3.0, 1.5])
    x = rng.normal(size=(n, K)) @ basis.T + 0.1 * rng.normal(size=(n, D)) + 1.0
    return {"x": x}, {"basis": basis}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
