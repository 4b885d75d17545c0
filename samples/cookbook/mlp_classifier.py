"""Data for mlp_classifier.loss: labels drawn from the class probabilities of a
random teacher network (a tanh layer of 6 units, then a softmax over 3 classes), so
the teacher's held-out log loss is the best any model can expect."""
import numpy as np

D, H, K = 4, 6, 3


def teacher(seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(scale=1.5, size=(H, D)), "b1": rng.normal(size=H),
            "W2": rng.normal(scale=2.0, size=(K, H)), "b2": np.zeros(K)}


def teacher_probabilities(x, t):
    z = np.tanh(x @ t["W1"].T + t["b1"]) @ t["W2"].T + t["b2"]
    z -= z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def generate(n=4000, seed=0):
    t = teacher()
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(n, D))
    p = teacher_probabilities(x, t)
    label = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return {"x": x, "label": label}, {"teacher": t}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
