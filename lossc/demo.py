"""`make demo`: train the bundled logistic regression and show the loss falling.

    python -m lossc.demo

Compiles samples/logistic.loss, trains it with Adam on samples/data/logistic.csv
(4000 samples, 8 features), prints the objective after each epoch, then the accuracy
on the held-out samples/data/logistic_test.csv. A few seconds, most of it compiling.
"""
from __future__ import annotations

import pathlib
import time

import lossc
from lossc.optim import accuracy, load_data
from lossc.optim.driver import format_seconds

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
    print(f"training on {len(train['y'])} samples (samples/data/logistic.csv), testing on "
          f"{len(test['y'])}")

    def report(info):
        print(f"  epoch {info.epoch:>2}  loss {info.loss:.6f}")

    print(f"  epoch  0  loss {model.loss(model.init_params(0), **train):.6f}  (initial)")
    result = lossc.train(model, data=train, optimizer=lossc.Adam(lr=0.01), batch_size=64,
                         epochs=20, seed=0, callback=report)
    took = format_seconds(result.seconds)
    print(f"{result.stopped_reason.capitalize()} in {took} ({result.steps} Adam steps "
          f"of 64 samples); best training loss {result.best_loss:.6f} after epoch "
          f"{result.best_epoch}")
    print(f"test loss {model.loss(result.params, **test):.6f}; accuracy: training "
          f"{accuracy(model, result.params, train):.1%}, test "
          f"{accuracy(model, result.params, test):.1%}")


if __name__ == "__main__":
    try:
        lossc.Options.from_env()      # (LOSSC_* settings: a mistake is one line)
    except ValueError as e:
        raise SystemExit(f"lossc: error: {e}")
    main()
