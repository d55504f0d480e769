# `make test` and `make demo` each create .venv when missing and install zoo into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed

.PHONY: install system-deps test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Real offline data for the tests and recipes: Debian's Fashion-MNIST, when apt-get can install it.
FASHION := /usr/share/datasets/fashion-mnist
system-deps:
	@if [ ! -d $(FASHION) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; fi

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(STAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# zoo's main job on Split-Digits, offline, under a minute on 2 CPU cores (zoo/demo.py): boosting scheduler,
# parallel BMC experts into runs/demo/registry, base:latest, a data-free Ex-Model student, Model Zoo and the
# baselines; prints one table, the lineage of base:latest and the path of the comparison figure.
demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m zoo.demo --out runs/demo

bench: $(STAMP)
	$(PY) bench/registry.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
