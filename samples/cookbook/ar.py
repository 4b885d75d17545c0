"""A stationary AR(3) series, cut into samples of (the 3 previous values, the next)
for ar.loss; the truth holds the series too."""
import numpy as np

PHI, C, P = np.array([0.5, -0.3, 0.2]), 1.0, 3


def generate(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    series = np.zeros(n + P + 200)
    for t in range(P, len(series)):
        series[t] = C + PHI @ series[t - P:t][::-1] + rng.normal()
    series = series[200:]                                   # past the start-up
    lags = np.stack([series[P - 1 - k:len(series) - 1 - k] for k in range(P)], axis=1)
    return {"lags": lags, "y": series[P:]}, {"phi": PHI, "c": C, "series": series}


if __name__ == "__main__":
    from cookbook_io import main
    main(generate)
