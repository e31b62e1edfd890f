# Two commands: `make run` (the whole stack on local storage) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test setup setup-dev bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "venv failed: installing Debian's python3-venv"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev
	@bash scripts/system-deps.sh

## run: web (:8000), worker, beat and flower (:5555) on 127.0.0.1 in development, starting Redis if none answers
## on REDIS_URL. Shell variables win over .env (ENV_FILE=other.env picks another file); see scripts/run.py.
run: setup
	@mkdir -p var
	$(BIN)/python -m scripts.run

## test: the whole suite against its own Redis, Celery worker and storage servers; browser test files each in
## a process of their own under a hard wall clock (scripts/test.py)
test: setup-dev
	$(BIN)/python -m scripts.test $(PYTEST_ARGS)

## bench: remux throughput vs ffmpeg, and peak memory
bench: setup-dev
	$(BIN)/python -m bench.finalize_bench

## bench-load: 50 participants PUT 64 KB chunks at the Procfile's web vs a bare fsync+HSET floor (BENCH_ARGS="--seconds 20")
.PHONY: bench-load
bench-load: setup-dev
	$(BIN)/python -m bench.load_bench $(BENCH_ARGS)

## bench-webrtc: web CPU per recorded 640x480 WebRTC participant, and peers per process (BENCH_ARGS="--peers 1 4 8 16")
.PHONY: bench-webrtc
bench-webrtc: setup-dev
	$(BIN)/python -m bench.webrtc_bench $(BENCH_ARGS)

## bench-demo: the /demo page in headless Chromium, last chunk's 202 → completed, with and without LIVE_FINALIZE and
## without final (BENCH_ARGS="--seconds 5 --repeat 1")
.PHONY: bench-demo
bench-demo: setup-dev
	$(BIN)/python -m bench.demo_flow_bench $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache
