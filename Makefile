# Every target creates .venv if it is missing and installs into it; nothing touches the system Python.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.torch_extensions

.PHONY: install browser test test-fast lint run bench clean sky
# Independent prerequisites build side by side: `make test` installs chromium (apt) while uv
# installs the venv. A target's own recipe lines still run one after another.
MAKEFLAGS += --jobs=2

# SkyPilot, the cluster launcher (sky/, docs/sky.md), lives in a tool environment of its own: its
# click pin conflicts with this project's stack, and it never imports dragonfly. It is called as
# the command $(SKY_VENV)/bin/sky. `make sky SKY_EXTRAS=aws,gcp` adds the clouds' SDKs.
comma := ,
SKY_VENV := .venv-sky
SKY_SPEC := skypilot$(if $(SKY_EXTRAS),[$(SKY_EXTRAS)])==0.14.1
SKY_STAMP := $(SKY_VENV)/.installed-$(subst $(comma),-,$(or $(SKY_EXTRAS),none))
UV_SPEC := uv==0.13.9
# --compile-bytecode: pip compiles at install, uv does not. Where PYTHONDONTWRITEBYTECODE is set
# (this machine, and by its times CI), every process would otherwise recompile transformers,
# mlflow and prefect from source on each import (measured: ~6 CPU-minutes over the suite).
UV = $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, by pip: the CPU build on disk (uv does not look there); an unpinned torch
	# would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# uv installs the exact pins in seconds where pip takes minutes; it reads PyPI, or the
	# mirror named in UV_INDEX_URL (it does not read pip.conf).
	$(BIN)/pip install --quiet $(UV_SPEC)
	$(UV) -r requirements.lock
	$(UV) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Three workers on two cores (a third keeps the cores busy while another waits on a server or pip): each test has its own temporary folders, MLflow store, Prefect home and ports
# (tests/conftest.py), so they run side by side; TEST_WORKERS=1 runs them one at a time.
TEST_WORKERS ?= 3

# The demo page's test (tests/test_demo_page.py) drives Debian's chromium, not a browser
# Playwright downloads: a system package, so apt installs it on a fresh machine (as root, or
# through sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	test -x /usr/bin/chromium || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

# DeepSpeed compiles its CPU comm op on first use (~35 s, 60 CPU-s; docs/deepspeed.md): built
# here by DeepSpeed's own call, so it overlaps chromium's install and no test waits on it.
DS_OP := .torch_extensions/deepspeed_shm_comm/deepspeed_shm_comm.so

$(DS_OP): $(STAMP)
	$(BIN)/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"

test: $(STAMP) browser $(DS_OP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Our own modules too, for the same reason (a second; stale ones are recompiled in memory).
	$(BIN)/python -m compileall -q dragonfly flows tests
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 tests

# The inner loop: in-process unit tests only (no command, server or training run); see the
# `integration` marker in tests/conftest.py.
test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) -m "not integration" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

run: $(STAMP)
	bash scripts/demo.sh

$(SKY_STAMP): $(STAMP)
	test -x $(SKY_VENV)/bin/python || $(PY) -m venv $(SKY_VENV)
	echo '*' > $(SKY_VENV)/.gitignore  # the environment ignores itself: nothing of it is ever committed
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(SKY_VENV)/bin/python '$(SKY_SPEC)'
	touch $(SKY_STAMP)

sky: $(SKY_STAMP)
	@echo "SkyPilot: $(SKY_VENV)/bin/sky ($$($(SKY_VENV)/bin/sky --version))"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_processing.py

clean:
	rm -rf $(VENV) $(SKY_VENV) outputs
