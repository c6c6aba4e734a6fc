# ember: `make demo` runs the main job, `make test` the test suite. Both set up everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ember-installed
# Real MXNet 1.9.1 (with the NumPy it needs) for the tests that check files both ways
MXVENV ?= .venv-mxnet
MXSTAMP := $(MXVENV)/.mxnet-installed

.PHONY: test demo bench lint mxsuite clean graphviz prebuild

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev,image,onnx,dist,cuda]'
	@touch $(STAMP)

# The kernels every network shares, compiled once for a cold kernel cache (runtime/prebuilt.py);
# again when the kernels' sources change (entries are named by a hash of their text). With
# them the package's bytecode, as pip writes it for a regular install: an editable install
# under PYTHONDONTWRITEBYTECODE=1 compiled every module's source at each import (0.4 s)
PREBUILT := runtime/_prebuilt/MANIFEST.json
$(PREBUILT): $(STAMP) $(wildcard backends/*.py ir/*.py) frontend/prebuild.py
	$(PY) -m compileall -q frontend ir passes backends runtime >/dev/null
	$(PY) -m ember prebuild

prebuild: $(PREBUILT)

test: $(STAMP) $(MXSTAMP) graphviz
	$(VENV)/bin/ruff check frontend ir passes backends runtime tests bench
	EMBER_TEST_MXNET_PYTHON=$${EMBER_TEST_MXNET_PYTHON:-$(abspath $(MXVENV))/bin/python} \
		$(PY) -m pytest -q

# Installed like ember's own dependencies: the tests against real MXNet must run, not skip
$(MXSTAMP):
	@test -x $(MXVENV)/bin/python || $(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/python -m pip install -q 'mxnet==1.9.1' 'numpy<1.24'
	$(MXVENV)/bin/python -c 'import mxnet'
	@touch $(MXSTAMP)

# Graphviz's dot draws graphs (ember viz, the demo); without it those tests skip
graphviz:
	@command -v dot >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq graphviz; fi; } || \
		echo "WARNING: graphviz could not be installed: ember viz draws DOT text only"

FMNIST := /usr/share/datasets/fashion-mnist

demo: $(STAMP) $(PREBUILT) $(FMNIST)/train-images-idx3-ubyte.gz graphviz
	$(PY) -m ember demo

# Fashion-MNIST from Debian (the demo never downloads at run time)
$(FMNIST)/train-images-idx3-ubyte.gz:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi

bench: $(STAMP) $(MXSTAMP) $(PREBUILT)
	EMBER_BENCH_MXNET_PYTHON=$${EMBER_BENCH_MXNET_PYTHON:-$(abspath $(MXVENV))/bin/python} \
		$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check frontend ir passes backends runtime tests bench

# MXNet 1.9.1's own unit tests against ember (MXSUITE_REPO: a git mirror of apache/mxnet)
mxsuite: $(STAMP)
	$(PY) ../shared/mxsuite/run_suite.py --python $(abspath $(PY)) --shim ../shared/mxsuite/shim \
		--quick --out mxsuite.json

clean:
	rm -rf $(VENV) $(MXVENV) build *.egg-info demo-out runtime/_prebuilt
