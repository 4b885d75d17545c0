# lossc: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test verify bench env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(PY) -m lossc.demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

# the full size sweep (tests/sweep.py): every model family at every size, dtype and
# vector width against the reference interpreter; run it before code generation changes
verify: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal -p no:cacheprovider tests/test_sweep.py --sweep full

# the peers (JAX, PyTorch) are optional: installed here, for the benchmarks only
PEERS := $(VENV)/.peers

$(PEERS): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,peers]' || echo "peers not installed: benchmarking lossc against numpy only"
	touch $(PEERS)

bench: $(PEERS)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
