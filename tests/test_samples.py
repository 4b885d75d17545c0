"""Every sample model with its bundled data: the gradient agrees with central
differences on real data, and a short training run lowers the objective."""
import numpy as np
import pytest

import lossc
from conftest import SAMPLES
from lossc.check import gradient_check
from lossc.optim import load_data

WITH_DATA = ["linear", "logistic", "softmax", "poisson", "huber", "mlp"]


def test_every_sample_with_data_is_listed():
    stems = {p.stem for p in (SAMPLES / "data").glob("*.csv")} - {"logistic_test"}
    assert stems == set(WITH_DATA)


@pytest.mark.parametrize("name", WITH_DATA)
def test_sample_trains_on_its_data(name):
    m = lossc.compile(SAMPLES / f"{name}.loss")
    data = load_data(SAMPLES / "data" / f"{name}.csv", m)
    few = {k: v[:32] for k, v in data.items()}
    report = gradient_check(m, data=few, rtol=1e-5)
    assert report["ok"], report
    result = lossc.train(m, data=data, optimizer=lossc.Adam(lr=0.01), batch_size=64,
                         epochs=5, seed=0)
    assert result.history[-1] < 0.9 * result.history[0]
    assert np.all([np.all(np.isfinite(v)) for v in result.params.values()])
