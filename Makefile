# One entry point for everything: `make setup`, `make test`, `make demo`, `make bench`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := pkg-config libturbojpeg0-dev libopencv-dev dataset-fashion-mnist

export NUMBA_THREADING_LAYER := omp
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export MPLBACKEND := Agg

.PHONY: setup system-deps test lint bench clean-venv

setup: system-deps $(STAMP)

# FFCV compiles against OpenCV and libjpeg-turbo; Fashion-MNIST is the offline default data.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done 2>/dev/null); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "setup: not a Debian system; install the equivalents of: $$missing (FFCV needs OpenCV, libjpeg-turbo, pkg-config)" >&2; exit 2; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "setup: missing Debian packages: $$missing; run: sudo apt-get update && sudo apt-get install -y $$missing" >&2; exit 2; fi; \
	echo "setup: installing Debian packages: $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check autolr tests bench train.py

bench: setup
	$(BIN)/python bench/gp_test.py

clean-venv:
	rm -rf $(VENV)
