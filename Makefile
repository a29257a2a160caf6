# Every target sets itself up: a virtualenv in .venv with ugro installed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
GPUS   ?=

.PHONY: setup system demo test lint bench up down worker beat flower web exporter clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "ugro needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the tests drive for real: sshd (network probes), Chromium
# (Flower in a browser) and libfaketime (a node whose clock is off). Installed once
# when missing and we may; never a download of a browser of its own.
SYSTEM_TOOLS := /usr/sbin/sshd /usr/bin/chromium /usr/bin/chromedriver /usr/bin/faketime
system:
	@missing=""; for tool in $(SYSTEM_TOOLS); do [ -x $$tool ] || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing openssh-server chromium chromium-driver faketime (missing:$$missing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends openssh-server chromium chromium-driver faketime >/dev/null; \
	  else \
	    echo "missing:$$missing; install openssh-server chromium chromium-driver faketime" >&2; exit 1; \
	  fi; \
	fi

demo: setup  ## run a sweep on 4 simulated GPUs with the embedded Redis, then stop
	$(BIN)/ugro demo

test: setup system  ## the test suite against real Redis, workers and processes
	$(BIN)/pytest

lint: setup  ## ruff, mypy and import-linter (the layers in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup  ## ugro against raw Celery and the process floor (QUICK=1: under a minute)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

up: setup  ## start Redis (embedded), GPU workers, node agent and beat in the background; logs in <data_dir>/run/
	$(BIN)/ugro up $(if $(GPUS),--gpus $(GPUS))

down: setup  ## stop what `make up` started
	$(BIN)/ugro down

worker: setup  ## this node's GPU workers and node agent, in the foreground
	$(BIN)/ugro worker $(if $(GPUS),--gpus $(GPUS))

beat: setup  ## Celery beat with ugro's schedule, in the foreground
	$(BIN)/ugro beat

flower: setup  ## Flower on ugro's broker, login required (UGRO_FLOWER_PORT, 5555), in the foreground
	$(BIN)/ugro flower

web: setup  ## the web dashboard, login required (UGRO_WEB_PORT, 8265), in the foreground
	$(BIN)/ugro web

exporter: setup  ## the Prometheus exporter (UGRO_METRICS_PORT, 9847), in the foreground
	$(BIN)/ugro exporter

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
