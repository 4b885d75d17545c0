"""Regenerate the bundled sample data sets (fixed seeds; run from the repository root):

    python samples/data/make_data.py
"""
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def write_csv(name, columns: dict):
    header = ",".join(columns)
    table = np.column_stack(list(columns.values()))
    ints = [np.issubdtype(np.asarray(v).dtype, np.integer) for v in columns.values()]
    fmt = ["%d" if i else "%.6f" for i in ints]
    np.savetxt(HERE / name, table, delimiter=",", header=header, comments="", fmt=fmt)


def features(X, name="x"):
    return {f"{name}.{j}": X[:, j] for j in range(X.shape[1])}


def logistic(rng):
    D, N = 8, 5000
    w = rng.normal(size=D)
    X = rng.normal(size=(N, D))
    y = (rng.random(N) < 1 / (1 + np.exp(-(X @ w + 0.5)))).astype(int)
    write_csv("logistic.csv", {**features(X[:4000]), "y": y[:4000]})
    write_csv("logistic_test.csv", {**features(X[4000:]), "y": y[4000:]})


def linear(rng):
    D, N = 8, 2000
    w = rng.normal(size=D)
    X = rng.normal(size=(N, D))
    write_csv("linear.csv", {**features(X), "y": X @ w - 1.0 + 0.1 * rng.normal(size=N)})


def softmax(rng):
    D, K, N = 4, 3, 1500
    W = rng.normal(size=(K, D)) * 2
    X = rng.normal(size=(N, D))
    z = X @ W.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    label = np.array([rng.choice(K, p=row) for row in p])
    write_csv("softmax.csv", {**features(X), "label": label})


def poisson(rng):
    D, N = 3, 2000
    w = rng.normal(size=D) * 0.5
    X = rng.normal(size=(N, D))
    write_csv("poisson.csv", {**features(X), "count": rng.poisson(np.exp(X @ w + 0.3))})


def huber(rng):
    """Linear data with heavy-tailed noise: where Huber regression beats least squares."""
    D, N = 3, 1000
    w = rng.normal(size=D)
    X = rng.normal(size=(N, D))
    noise = 0.1 * rng.standard_t(1.5, size=N)
    write_csv("huber.csv", {**features(X), "y": X @ w + 0.5 + noise})


def mlp(rng):
    """A smooth nonlinear target of 16 features for the tanh network."""
    D, N = 16, 2000
    X = rng.normal(size=(N, D))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=N)
    write_csv("mlp.csv", {**features(X), "y": y})


if __name__ == "__main__":
    rng = np.random.default_rng(20261124)
    # the later data sets draw from streams of their own, so adding one changes none
    # of the others
    huber(np.random.default_rng([20261124, 1]))
    mlp(np.random.default_rng([20261124, 2]))
    for make in (logistic, linear, softmax, poisson):
        make(rng)
