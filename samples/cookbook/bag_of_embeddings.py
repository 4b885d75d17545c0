"""Documents for bag_of_embeddings.loss: each class draws its L tokens from its own
distribution over the V ids (a multinomial naive Bayes model), so the Bayes-optimal
classifier, which the truth holds, is known exactly."""
import numpy as np

V, K, L = 50, 3, 12


def token_probabilities(seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(V, 3.0), size=K)           # (K, V)


def generate(n=3000, seed=0):
    probs = token_probabilities()
    rng = np.random.default_rng(seed + 1)
    label = rng.integers(0, K, size=n)
    tok = np.stack([rng.choice(V, size=L, p=probs[k]) for k in label])
    return {"tok": tok, "label": label}, {"token_probabilities": probs}


def bayes_log_posterior(tok, probs):
    """log P(class | tokens) under the generating model (equal class priors)."""
    scores = np.log(probs)[:, tok].sum(axis=2).T               # (n, K)
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
