# ember: `make demo` runs the main job, `make test` the test suite. Both set up everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ember-installed

.PHONY: test demo bench lint mxsuite clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check frontend ir passes backends runtime tests bench
	$(PY) -m pytest -q

FMNIST := /usr/share/datasets/fashion-mnist

demo: $(STAMP) $(FMNIST)/train-images-idx3-ubyte.gz
	@# Graphviz's dot draws the model (SVG); without it the demo writes DOT text instead
	@command -v dot >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq graphviz; fi; } || \
		echo "graphviz could not be installed: the demo draws its graph as DOT text"
	$(PY) -m ember demo

# Fashion-MNIST from Debian (the demo never downloads at run time)
$(FMNIST)/train-images-idx3-ubyte.gz:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check frontend ir passes backends runtime tests bench

# MXNet 1.9.1's own unit tests against ember (MXSUITE_REPO: a git mirror of apache/mxnet)
mxsuite: $(STAMP)
	$(PY) ../shared/mxsuite/run_suite.py --python $(abspath $(PY)) --shim ../shared/mxsuite/shim \
		--quick --out mxsuite.json

clean:
	rm -rf $(VENV) build *.egg-info demo-out
