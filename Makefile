# Two entry points matter: `make serve` (the main job) and `make test` (the suite).
# Neither needs root: tools from outside Python (wrk, the Pub/Sub emulator) are installed
# by .ci/run in CI, and the tests that need them skip elsewhere, saying what to install.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODELS := models
# Every version that CI, `make venv` and the images install: pip constraints (`make lock`).
LOCK := requirements.lock
UV_VERSION := 0.13.10
REST_PORT ?= 8501
GRPC_PORT ?= 8500
MLSERVER_VENV ?= build/mlserver-venv
KSERVE_VENV ?= build/kserve-venv
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv lock models serve test lint bench bench-ceiling bench-grpc bench-large bench-v2 mlserver-venv kserve-venv bench-precomputed bench-codec bench-runners bench-parallelism bench-batch bench-streaming loadtest soak publish-results v2-protos clean

# One venv; each target installs the extras it needs (pyproject.toml) at the lock's
# versions, once per set and again when either file changes.
$(VENV)/.extras-%: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[$*]'
	touch $@

# Resolves pyproject.toml, every extra, for the images' Python and platform (3.11, Debian
# bookworm's glibc on x86_64), keeping the lock's pins that still fit (LOCK_FLAGS=--upgrade
# moves all to the newest allowed, --upgrade-package=NAME one). uv, not pip-tools: it reads
# no pip configuration (this machine's extra indexes and find-links stay out of the lock),
# resolves for a named target rather than the running interpreter, takes seconds where pip's
# backtracking over TensorFlow and Beam takes minutes, and writes plain pins that pip installs.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'uv==$(UV_VERSION)'
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --no-config --quiet \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	  --custom-compile-command 'make lock' $(LOCK_FLAGS) --output-file $(LOCK)

venv: $(VENV)/.extras-test

# serving/v2/open_inference.binpb: serving/v2/open_inference.proto compiled to a descriptor set
# (serving/v2/protos.py loads it; no generated code). Run after editing the .proto. grpcio-tools
# needs a newer protobuf than our pin, so it gets a throwaway venv of its own under build/.
V2_PROTOC := build/v2-protos
v2-protos:
	test -x $(V2_PROTOC)/bin/python || $(PYTHON) -m venv $(V2_PROTOC)
	$(V2_PROTOC)/bin/python -m pip install --quiet 'grpcio-tools==1.85.*'
	$(V2_PROTOC)/bin/python -m grpc_tools.protoc --proto_path=serving/v2 \
	  --descriptor_set_out=serving/v2/open_inference.binpb serving/v2/open_inference.proto

models: $(MODELS)/.built

$(MODELS)/.built: $(VENV)/.extras-examples $(wildcard serving/examples/*.py)
	$(PY) -m serving.examples.build --out $(MODELS)
	touch $@

serve: models
	$(PY) -m serving --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
	  --model_config_file=$(MODELS)/models.config \
	  --enable_batching --batching_parameters_file=serving/examples/batching.config

lint: $(VENV)/.extras-test
	$(VENV)/bin/ruff check .

test: $(VENV)/.extras-test models lint
	$(PY) -m pytest -q

# The benchmarks need wrk (apt-get install wrk). `make bench` runs the five server benches:
# setups against the ceiling, naive and upstream; the ceiling side by side on one core;
# gRPC vs REST CPU; large requests; the precomputed-predictions split (Locust; needs
# redis-server too). Every bench, loadtest and soak run writes under bench-results/ only.
bench: $(VENV)/.extras-batch,loadtest models
	$(PY) -m loadtests.benchmarks.bench
	$(PY) -m loadtests.benchmarks.bench_ceiling
	$(PY) -m loadtests.benchmarks.bench_grpc
	$(PY) -m loadtests.benchmarks.bench_large
	$(PY) -m loadtests.benchmarks.bench_precomputed

bench-precomputed: $(VENV)/.extras-batch,loadtest models
	$(PY) -m loadtests.benchmarks.bench_precomputed

bench-ceiling: $(VENV)/.extras-loadtest models
	$(PY) -m loadtests.benchmarks.bench_ceiling

bench-grpc: $(VENV)/.extras-loadtest models
	$(PY) -m loadtests.benchmarks.bench_grpc
	$(PY) -m loadtests.benchmarks.bench_answers

bench-large: $(VENV)/.extras-loadtest models
	$(PY) -m loadtests.benchmarks.bench_large

# The Open Inference Protocol (v2 REST JSON and binary, v2 gRPC; tritonclient's aio clients)
# against TF Serving's REST on one gateway: natality and the image model, concurrency 1-64,
# then each one's highest rate within p99 <= 25 ms; and Seldon MLServer (the Python v2 server)
# on natality, adaptive batching on and off.
bench-v2: $(VENV)/.extras-loadtest,test models $(MLSERVER_VENV)/bin/mlserver
	$(PY) -m loadtests.benchmarks.bench_v2 --mlserver $(MLSERVER_VENV) --slo 25,image_classifier=100

# MLServer in a venv of its own (its pins are not ours), with the TensorFlow that loads the
# example SavedModels: 64 s and 2.3 GB here (mlserver 1.7.1, tensorflow 2.21.0). CI builds it
# (.ci/run) so that test_bench_v2's MLServer run runs there; elsewhere that test skips without it.
mlserver-venv: $(MLSERVER_VENV)/bin/mlserver

$(MLSERVER_VENV)/bin/mlserver:
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet 'mlserver==1.7.*' 'tensorflow==2.21.*'

# The kserve SDK in a venv of its own, for tests/v2/test_kserve_sdk.py (its v2 REST and gRPC
# clients against a real gateway; the test skips without it, fails under CI=true). It cannot
# join ours: kserve 0.21 requires psutil<6 (our lock: 7.2.2, via locust), and `import kserve`
# registers its own copy of the inference.* protos, which tritonclient's already hold in the
# same process ("duplicate symbol 'inference.ServerLiveRequest'"). kserve and its own
# dependencies only (kubernetes, pandas, fastapi...; no TensorFlow): 451 MB, built in 96 s
# here (60 s with pip's cache warm; kserve 0.21.0).
kserve-venv: $(KSERVE_VENV)/.installed

$(KSERVE_VENV)/.installed:
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet 'kserve==0.21.*'
	touch $@

bench-codec: $(VENV)/.extras-examples
	$(PY) -m loadtests.benchmarks.bench_codec

bench-runners: $(VENV)/.extras-examples models
	$(PY) -m loadtests.benchmarks.bench_runners

bench-parallelism: $(VENV)/.extras-examples models
	$(PY) -m loadtests.benchmarks.bench_parallelism

bench-batch: $(VENV)/.extras-batch,loadtest models
	$(PY) -m loadtests.benchmarks.bench_batch

bench-streaming: $(VENV)/.extras-batch,loadtest models
	$(PY) -m loadtests.benchmarks.bench_streaming

# Locust: SLO max-QPS per batching setting, upstream and gRPC comparisons, spike and ramp
# (about 8 minutes); writes bench-results/loadtest/ (loadtest.md, loadtest.json, sweep.png).
loadtest: $(VENV)/.extras-loadtest models
	$(PY) -m loadtests.locust_scenarios.run local --short

# Five minutes at 70% of the max QPS within the SLO, a new model version every minute:
# errors and RSS growth (bench-results/soak/soak.md).
soak: $(VENV)/.extras-loadtest models
	$(PY) -m loadtests.locust_scenarios.soak

# Runs never touch tracked files (bench-results/ is ignored). To update the committed tables
# and plots the docs link to (loadtests/results/): copy the latest outputs there, review with
# git diff, commit. Every job with outputs, or some: JOBS="loadtest soak precomputed".
publish-results:
	$(PY) -m loadtests.publish $(JOBS)

clean:
	rm -rf $(MODELS) $(VENV)
