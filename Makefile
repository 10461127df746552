# AI Factory — build, test and run. `make install` once, then `make demo` or `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
AIF := $(VENV)/bin/aifactory
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := python3-qgis qgis-providers qgis python3-pyqt5 python3-venv xvfb xdotool imagemagick \
	xauth postgresql postgis postgresql-postgis zip g++ ninja-build python3-gdal
HEADLESS := QT_QPA_PLATFORM=offscreen MLFLOW_DISABLE_TELEMETRY=true RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
	PYTHONFAULTHANDLER=1
DEMO_DIR ?= demo_output

.PHONY: install system-deps test test-core test-qgis demo bench lint package qgis clean help

help:
	@echo "make install   system packages (apt), .venv with pinned dependencies, aifactory in editable mode"
	@echo "make demo      the main job on real NEON imagery (writes $(DEMO_DIR)/)"
	@echo "make test      the whole test suite, headless"
	@echo "make lint      ruff + mypy"
	@echo "make bench     benchmarks (ratios measured in one run)"
	@echo "make package   the installable QGIS plugin zip in dist/"
	@echo "make qgis      a real QGIS with the plugin enabled on a sample project"

install: system-deps $(VENV)/.installed

# Installs only what is missing, so a second run costs a few dpkg queries.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:" $$missing; \
		$(SUDO) apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m aifactory.tensor_pool || echo "tensor pool not built: prediction on the CPU will run without it"
	touch $@

test: test-core test-qgis

test-core:
	$(HEADLESS) $(PY) -m pytest -p no:pytest_qgis tests/core tests/e2e

test-qgis:
	$(HEADLESS) $(PY) -m pytest tests/qgis tests/desktop

demo:
	$(HEADLESS) $(AIF) demo -o $(DEMO_DIR)

bench:
	$(HEADLESS) $(PY) bench/run.py $(if $(FULL),--full,)

lint:
	$(VENV)/bin/ruff check core aifactory_qgis tests bench
	$(VENV)/bin/mypy

package:
	$(PY) tools/qgis_plugin.py package

qgis:
	$(PY) tools/qgis_plugin.py qgis

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache $(DEMO_DIR)
