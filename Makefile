# Two commands matter: `make test` and `make demo`. Both build .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

# A machine without an NVIDIA GPU gets PyTorch's CPU build: the default CUDA wheel is several GB it
# cannot use. The CPU pin is the build this project is tested with; override TORCH_CPU_SPEC to change it.
HAS_GPU         := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_CPU_SPEC  ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_GPU_SPEC  ?= torch>=2.4

# Test workers (pytest-xdist): the suite is single-threaded per test (tests/conftest.py), so two workers
# use both cores of a 2-core machine; PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: setup test demo lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
ifeq ($(HAS_GPU),1)
	$(PIP) install --quiet "$(TORCH_GPU_SPEC)"
else
	# torch alone from the CPU index (--no-deps: its dependencies come from PyPI in the next step,
	# so an unreachable CPU index costs one lookup, not one per dependency).
	$(PIP) install --quiet --no-deps --retries 0 --extra-index-url $(TORCH_CPU_INDEX) "$(TORCH_CPU_SPEC)"
endif
	$(PIP) install --quiet -e ".[test]"
	touch $@

test: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/scratchlm demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	$(PY) benchmarks/attention_backends.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
