"""`make demo`: train the bundled logistic regression and show the loss falling.

    python -m lossc.demo
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

import lossc
from lossc.optim.data import load_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def main() -> None:
    t = time.perf_counter()
    seed = lossc.compile(SAMPLES / "seed.loss")
    value, grads = seed.value_and_grad(seed.init_params())
    print(f"seed example: f = {value:.10g}, gradient ({float(grads['x1']):.10g}, "
          f"{float(grads['x2']):.10g})")

    model = lossc.compile(SAMPLES / "logistic.loss")
    print(f"compiled samples/logistic.loss in {time.perf_counter() - t:.2f} s: {model}")
    train = load_data(SAMPLES / "data" / "logistic.csv", model)
    test = load_data(SAMPLES / "data" / "logistic_test.csv", model)
    print(f"training on {len(train['y'])} samples, testing on {len(test['y'])}")

    def report(epoch, loss, params):
        print(f"  epoch {epoch:>2}  loss {loss:.6f}")

    result = lossc.train(model, data=train, optimizer=lossc.Adam(lr=0.01), batch_size=64,
                         epochs=20, seed=0, callback=report)
    w, b = result.params["w"], float(result.params["b"])

    def accuracy(data):
        predicted = (data["x"] @ w + b) > 0
        return float(np.mean(predicted == (data["y"] > 0.5)))

    print(f"{result.stopped} in {result.seconds:.2f} s ({result.steps} Adam steps); "
          f"best training loss {result.best_loss:.6f}")
    print(f"test loss {model.loss(result.params, **test):.6f}; accuracy: training "
          f"{accuracy(train):.1%}, test {accuracy(test):.1%}")


if __name__ == "__main__":
    main()
