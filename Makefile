# Two commands set everything up (README.md):
#   make book   - create .venv, install the pinned stack, execute every chapter, render _build/html
#   make test   - unit tests, notebook-pair sync, nbval on every chapter, strict book build
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MATHJAX_VERSION := 3.2.2
MATHJAX := _vendor/mathjax/tex-chtml.js
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.md))
IPYNBS := $(NOTEBOOKS:.md=.ipynb)
# CPU only, and no warning about a missing accelerator in stored outputs.
export JAX_PLATFORMS := cpu
export PYTHONHASHSEED := 0
# One BLAS thread: on 2 cores OpenBLAS threads contend with XLA's (an 841x841 eigh went from
# 5.2 s to 0.35 s under load), and a fixed thread count keeps last-bit results reproducible.
export OPENBLAS_NUM_THREADS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: all book test setup notebooks unit pairs nbval html lock benchmarks clean

all: book

setup: $(STAMP) $(MATHJAX)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# MathJax 3 from the npm registry, served from the built site (no CDN at reading time).
$(MATHJAX):
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq npm >/dev/null)
	rm -rf _vendor/tmp && mkdir -p _vendor/tmp
	cd _vendor/tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar -xzf _vendor/tmp/mathjax-$(MATHJAX_VERSION).tgz -C _vendor/tmp
	rm -rf _vendor/mathjax && mv _vendor/tmp/package/es5 _vendor/mathjax && rm -rf _vendor/tmp
	test -f $@

# Re-execute every chapter and refresh its stored outputs (run after editing a notebooks/*.md).
notebooks: $(STAMP)
	$(BIN)/jupytext --quiet --sync $(NOTEBOOKS)
	for nb in $(IPYNBS); do \
	  echo "executing $$nb"; \
	  $(BIN)/jupyter nbconvert --log-level=ERROR --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.record_timing=False $$nb || exit 1; \
	done

html: setup
	$(BIN)/jupyter-book build --quiet . $(JB_FLAGS)
	@echo "The book: $(abspath _build/html/index.html)"

book: setup notebooks
	$(MAKE) --no-print-directory html

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

pairs: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_notebook_pairs.py

nbval: $(STAMP)
	$(BIN)/python -m pytest -q --nbval --nbval-current-env --nbval-cell-timeout=900 $(IPYNBS)

test: setup
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q --nbval --nbval-current-env --nbval-cell-timeout=900 $(IPYNBS)
	rm -rf _build
	$(MAKE) --no-print-directory html JB_FLAGS="-W -n --keep-going"

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# Regenerate the exact pins from requirements.in (needs the registry).
lock:
	rm -rf /tmp/entk-lock-venv && $(PYTHON) -m venv /tmp/entk-lock-venv
	/tmp/entk-lock-venv/bin/pip install --quiet --upgrade pip==26.3
	/tmp/entk-lock-venv/bin/pip install --quiet -r requirements.in
	# --all keeps setuptools and wheel pinned too (the editable install of helpers needs them)
	/tmp/entk-lock-venv/bin/pip freeze --all --exclude-editable | grep -v '^pip==' > requirements.lock

clean:
	rm -rf _build _vendor
