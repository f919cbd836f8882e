# Two entry points matter: `make serve` (the main job) and `make test` (the suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODELS := models
REST_PORT ?= 8501
GRPC_PORT ?= 8500
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv models tools serve test bench bench-batch bench-streaming loadtest clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

models: $(MODELS)/.built

$(MODELS)/.built: $(VENV)/.installed $(wildcard serving/examples/*.py)
	$(PY) -m serving.examples.build --out $(MODELS)
	touch $@

serve: models
	$(PY) -m serving --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
	  --model_config_file=$(MODELS)/models.config \
	  --enable_batching --batching_parameters_file=serving/examples/batching.config

# wrk (Debian's package) drives the benchmarks; the suite smoke-tests the harness with it.
tools:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

test: models tools
	$(PY) -m pytest -q

bench: models tools
	$(PY) -m loadtests.bench

bench-batch: models
	$(PY) -m loadtests.bench_batch

bench-streaming: models
	$(PY) -m loadtests.bench_streaming

# Locust: SLO max-QPS per batching setting, upstream and gRPC comparisons, spike and ramp
# (about 8 minutes); writes loadtests/results/loadtest.md and sweep.png for the README.
loadtest: models
	$(PY) -m loadtests.run local --short

clean:
	rm -rf $(MODELS) $(VENV)
