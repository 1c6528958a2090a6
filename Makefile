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

.PHONY: setup system-deps test lint bench clean-venv demo reproduce-fashion reproduce-cifar reproduce-imagenet figures

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
	$(BIN)/python bench/throughput.py

# A sweep, then its table and figures. JOBS runs that many runs at once (one per GPU on a GPU
# node); MAX_RUNS stops after that many runs so that a long grid runs in resumable chunks.
JOBS ?= 1
MAX_RUNS ?=
SWEEP_FLAGS = --jobs $(JOBS) $(if $(MAX_RUNS),--max-runs $(MAX_RUNS),)
# The sweep's exit code 1 (some run left no record) still rebuilds the table and figures of what
# is there, then fails; 2 (bad input, missing data) and an interrupt stop at once.
define run_sweep
	@echo "$(BIN)/python -m autolr.sweep sweeps/$(1).yaml $(SWEEP_FLAGS) $(2)"; rc=0; \
	$(BIN)/python -m autolr.sweep sweeps/$(1).yaml $(SWEEP_FLAGS) $(2) || rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 1 ]; then exit $$rc; fi; \
	$(BIN)/python -m autolr.results results/$(1) && $(BIN)/python -m autolr.plots results/$(1) plots/$(1) && exit $$rc
endef

# The demo trains every run for real into DEMO_DIR (git-ignored), builds its table and figures
# there, then compares each run with the committed record of the same run_id in results/demo
# (CPU runs are bitwise reproducible at the same thread count). A second `make demo` trains nothing
# and compares again; `rm -rf build/demo-rerun` starts over.
DEMO_DIR ?= build/demo-rerun
DEMO_SWEEP = $(BIN)/python -m autolr.sweep sweeps/demo.yaml --results-root $(DEMO_DIR) --ckpt-root $(DEMO_DIR)/checkpoints
demo: setup
	@echo "$(DEMO_SWEEP) $(SWEEP_FLAGS)"; rc=0; \
	$(DEMO_SWEEP) $(SWEEP_FLAGS) || rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 1 ]; then exit $$rc; fi; \
	$(BIN)/python -m autolr.results $(DEMO_DIR)/demo && $(BIN)/python -m autolr.plots $(DEMO_DIR)/demo $(DEMO_DIR)/plots \
	  || exit $$?; \
	echo "demo: table $(DEMO_DIR)/demo/TABLE.md, figures $(DEMO_DIR)/plots/; the reference: results/demo"; \
	$(DEMO_SWEEP) --max-runs 0 --compare results/demo || rc=$$?; \
	exit $$rc

reproduce-fashion: setup
	$(call run_sweep,fashion)

# torchvision downloads CIFAR where there is internet; elsewhere: one line saying how, exit code 2
reproduce-cifar: setup
	$(call run_sweep,cifar10,--download)
	$(call run_sweep,cifar100,--download)

reproduce-imagenet: setup
	$(call run_sweep,imagenet)

figures: setup
	$(BIN)/python -m autolr.plots --all
	@budgets=$$(ls -d results/budget-e* 2>/dev/null); if [ -n "$$budgets" ]; then \
	  $(BIN)/python -m autolr.plots --gap-vs-budget plots/budget/g_gap_vs_budget.png $$budgets; fi

clean-venv:
	rm -rf $(VENV)
