# Two commands set everything up (README.md):
#   make book   - create .venv, install the pinned stack, execute every chapter, render _build/html
#   make test   - unit tests, notebook-pair sync, nbval on every chapter and its declared variants,
#                 strict book build, browser check of every page (installs chromium with apt)
# Running chapters yourself (book/run_yourself.md):
#   make lab                                   - JupyterLab; notebooks/*.md open as notebooks
#   make chapter NB=06 ARGS="-p p 31 -p seed 3" - one chapter with your values (papermill)
#   make variants                              - every chapter under its declared variants
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
# No progress bars in executed outputs (nbval compares them); `make lab` and `make chapter`
# switch them on (helpers/progress.py).
export HELPERS_PROGRESS := 0
# Chapters run side by side by `make test` (nbval) and `make variants` (2 cores here).
JOBS ?= 2
# One XLA compute thread per process when JOBS processes share the cores.
XLA_ONE_THREAD := --xla_cpu_multi_thread_eigen=false
PORT ?= 8888

.PHONY: all book test setup notebooks unit pairs nbval html lock benchmarks bench bench-peers clean variants chapter lab pages
.PHONY: chromium browser book-checks

all: book

setup: $(STAMP) $(MATHJAX)

# The lock is complete (a freeze), so it installs with --no-deps: the venv is exactly the lock.
# It leaves out one optional package: rfc3987-syntax (and its lark), jsonschema's checker of the
# "iri" string format, which jupyter-events' jsonschema[format-nongpl] would pull in. Importing it
# builds some 25 Earley parsers (1.4 s), paid by every process that imports nbformat (each chapter
# kernel, papermill and nbval runner, the book build: about 100 s of CPU per `make test`);
# nothing here validates IRIs, and `pip check` finds no broken requirement without it.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
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
	$(BIN)/python -m tools.pages
	$(BIN)/jupyter-book build --quiet . $(JB_FLAGS)
	@echo "The book: $(abspath _build/html/index.html)"

book: setup notebooks
	$(MAKE) --no-print-directory html

# The unit tests' environment. Their xdist workers share one JAX compilation cache in a
# temporary folder (a program both compile, such as a zoo model's reference Jacobian, is compiled
# once; JAX writes entries without a lock, and a read that meets a half-written entry only warns
# and compiles again). They compile with JAX_DISABLE_MOST_OPTIMIZATIONS: LLVM's backend
# optimisation off, which makes XLA compile the ~10^4 small test programs about twice as fast;
# the programs the helpers build are the same, the tests compare values (against references
# compiled the same way), and the chapters, nbval and the benchmarks run fully optimised.
UNIT_ENV = cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && export JAX_COMPILATION_CACHE_DIR="$$cache" \
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1 \
  JAX_DISABLE_MOST_OPTIMIZATIONS=1 &&

unit: $(STAMP)
	@$(UNIT_ENV) $(BIN)/python -m pytest -q -n $(JOBS) tests

pairs: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_notebook_pairs.py

# nbval alone on every chapter, JOBS at a time (one per xdist worker), the longest first.
nbval: $(STAMP)
	XLA_FLAGS="$(strip $(XLA_FLAGS) $(if $(filter-out 1,$(JOBS)),$(XLA_ONE_THREAD)))" \
	  $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder \
	  --nbval --nbval-current-env --nbval-cell-timeout=900 $$($(BIN)/python -m tools.variants --longest-first)

# Each stage prints its wall time. Unit tests run in JOBS xdist workers. Then every chapter as
# a chain (tools/variants.py --nbval): nbval on its stored notebook, then its declared variants,
# one after the other, sharing the chapter's compiled programs (a per-chapter JAX compilation
# cache in a temporary folder); JOBS chapters at a time, the longest (by the last recorded
# `make variants`) first. The strict book build (-W -n) and the browser check of its pages need
# none of those runs (the book shows the stored outputs): `make book-checks` runs them in the
# first slot that frees once every chain has started (--then), beside the last chains, on the
# core they leave idle.
test: setup chromium
	@$(UNIT_ENV) TIMEFORMAT="make test: unit tests %0R s"; time $(BIN)/python -m pytest -q -n $(JOBS) --durations=15 tests
	@TIMEFORMAT="make test: nbval and declared variants of every chapter, and beside them make book-checks %0R s"; time \
	  $(BIN)/python -m tools.variants --jobs $(JOBS) --nbval --then "$(MAKE) --no-print-directory book-checks"

# The strict book build from the stored outputs, then the browser check of every page.
book-checks: setup chromium
	rm -rf _build/html _build/.doctrees _build/jupyter_execute
	@TIMEFORMAT="make test: strict book build %0R s"; time \
	  $(MAKE) --no-print-directory html JB_FLAGS="-W -n --keep-going"
	@TIMEFORMAT="make test: browser check %0R s"; time $(MAKE) --no-print-directory browser

# Headless Chromium for the browser check: the Debian package, installed with apt when missing
# (Playwright drives it from the venv and never downloads a browser of its own).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	@test -x $(CHROMIUM) || { echo "installing chromium (apt-get)"; $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "$(CHROMIUM) is missing after apt-get install chromium" >&2; exit 1; }

# Open every page of the built book (_build/html) in headless Chromium: equations typeset,
# images loaded, internal links and anchors resolve, no cell errors, no console errors.
# Full-page screenshots go to _build/screenshots/ (tests/browser_check.py).
browser: $(STAMP) chromium
	$(BIN)/python tests/browser_check.py _build/html --screenshots _build/screenshots --jobs $(JOBS)

# Every chapter under each declared variant (notebooks/NN_slug.variants.yml) and with its own
# values, JOBS at a time, from the .md sources into a temporary folder; records the results
# and times for the book (book/generated/). `make test` runs the variants only, and records nothing.
variants: $(STAMP)
	$(BIN)/python -m tools.variants --jobs $(JOBS) --with-default --record $(VARIANTS_FLAGS)

# One chapter with your own values: make chapter NB=06 ARGS="-p p 31 -p seed 3"
# (papermill; writes the executed notebook and its HTML under _build/chapters/, prints where).
chapter: $(STAMP)
	@if [ -z "$(NB)" ]; then echo 'usage: make chapter NB=06 ARGS="-p p 31 -p seed 3"' >&2; exit 2; fi
	@HELPERS_PROGRESS=text $(BIN)/python -m tools.run_chapter $(NB) $(ARGS)

# JupyterLab from the pinned environment. jupytext's contents manager opens notebooks/*.md as
# notebooks and keeps the .ipynb twin paired on save; progress bars show as widgets.
# PORT=8888 by default; LAB_FLAGS="--no-browser ..." passes more options (root, as in a
# container, is allowed).
lab: $(STAMP)
	HELPERS_PROGRESS=1 $(BIN)/jupyter lab --port=$(PORT) --ServerApp.root_dir="$(CURDIR)" \
	  --ServerApp.contents_manager_class=jupytext.AsyncTextFileContentsManager \
	  --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

# The generated tables of the pages "Run it yourself" and "Reproducing and varying the chapters".
pages: $(STAMP)
	$(BIN)/python -m tools.pages

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# The eNTK benchmark suite (benchmarks/bench_entk.py; 20-45 min here, with load): every implementation
# checked against an independent reference, then timed in its own process; writes
# benchmarks/results/results.{json,md} and bench.png (the book's Performance page shows them).
# BENCH_FLAGS=--quick: small sizes, results in _build/bench-quick. neural-tangents runs when
# `make bench-peers` has built its environment.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_entk.py $(BENCH_FLAGS)

# neural-tangents' own environment for the suite, never the book's .venv: it needs JAX 0.4.25 and
# numpy < 2, and pulls TensorFlow through tf2jax (a few minutes). The suite runs it as a separate
# process on the same saved parameters and inputs.
PEERS := .venv-peers
bench-peers: $(PEERS)/.installed-stamp

$(PEERS)/.installed-stamp:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet neural-tangents==0.6.5 "jax[cpu]==0.4.25" "numpy<2"
	$(PEERS)/bin/python -c "import neural_tangents"
	touch $@

# Regenerate the exact pins from requirements.in (needs the registry).
lock:
	rm -rf /tmp/entk-lock-venv && $(PYTHON) -m venv /tmp/entk-lock-venv
	/tmp/entk-lock-venv/bin/pip install --quiet --upgrade pip==26.3
	/tmp/entk-lock-venv/bin/pip install --quiet -r requirements.in
	# --all keeps setuptools and wheel pinned too (the editable install of helpers needs them)
	/tmp/entk-lock-venv/bin/pip freeze --all --exclude-editable | grep -v '^pip==' \
	  | grep -v -e '^rfc3987-syntax==' -e '^lark==' > requirements.lock

clean:
	rm -rf _build _vendor
