# cxr-gan: one entry point for setup, training, tests and lint.
# Variables can be overridden: make train DATA=/data/xrays HELDOUT=/data/other-patients PRESET=long TRAIN_ARGS="--seed 1"

PYTHON      ?= python3
VENV        ?= .venv
RUNTIME_VENV ?= .venv-runtime
DATA        ?= ../shared/data/kermany-cxr/train/NORMAL
# real images of other patients, scored against at each epoch end (skipped when the folder is absent)
HELDOUT     ?= ../shared/data/kermany-cxr/heldout/NORMAL
PRESET      ?= quick
RUNS        ?= runs
TRAIN_ARGS  ?=
EXPORT_SOURCE ?=
ARTIFACT    ?= artifacts/generator.onnx
BENCH_ARGS  ?=
EXPORT_ARGS ?= --latent-scale auto

BIN := $(VENV)/bin
RBIN := $(RUNTIME_VENV)/bin

.PHONY: setup setup-all setup-runtime train export sweep bench bench-train bench-stream bench-ray test test-runtime lint clean

# What training, export, sweeps and the benches need (no Ray, no pydicom).
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,dev]"
	touch $@

# The same venv with the optional extras too (DICOM, Ray): what the tests and bench-ray need.
setup-all: $(VENV)/.installed-all

$(VENV)/.installed-all: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[train,dev,dicom,ray]"
	touch $@

# The runtime alone (no TensorFlow): what a hospital-side install gets, plus pytest.
setup-runtime: $(RUNTIME_VENV)/.installed

$(RUNTIME_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RBIN)/python -m pip install -q --upgrade pip
	$(RBIN)/python -m pip install -q -e ".[dev,dicom,ray]"
	# the lowest pydicom the dicom extra allows, so its tests prove the lower bound
	$(RBIN)/python -m pip install -q "pydicom==3.0.1"
	@if $(RBIN)/python -c "import tensorflow" 2>/dev/null; then echo "tensorflow leaked into $(RUNTIME_VENV)"; exit 1; fi
	touch $@

train: setup
	$(BIN)/cxr-train --preset $(PRESET) --data "$(DATA)" $(if $(wildcard $(HELDOUT)),--heldout "$(HELDOUT)") \
		--out $(RUNS) $(TRAIN_ARGS)

# Converts EXPORT_SOURCE (a run folder or generator.keras), by default the newest finished
# run under $(RUNS), to $(ARTIFACT) behind the parity gate, with the latent scale calibrated
# on the run's training images (docs/export.md). `make train export` chains both.
# (after train when both are asked for, also under make -j)
export: setup $(filter train,$(MAKECMDGOALS))
	$(BIN)/cxr-export $(EXPORT_SOURCE) --runs $(RUNS) --out $(ARTIFACT) $(EXPORT_ARGS)

# Generator throughput of every engine in one run (bench/run.py -> bench/results.json), then
# SSIM/MSE scoring speed (bench/scoring.py -> bench/scoring.json).
bench: setup
	$(BIN)/python bench/run.py $(if $(wildcard $(DATA)),--data "$(DATA)") $(BENCH_ARGS)
	$(BIN)/python bench/scoring.py

# Training steps/s of cxr-train against a plainly written reference step (bench/training.py).
bench-train: setup
	$(BIN)/python bench/training.py

# A large synthetic training set (100,000 files by default) streamed from disk: wall time,
# step time, peak memory (bench/stream.py -> bench/stream.json). Needs ~8 GB of free disk.
bench-stream: setup
	$(BIN)/python bench/stream.py $(BENCH_ARGS)

# Sampling throughput: local engine vs Ray with 1 and 2 workers, and a 1-million-image estimate
# (bench/ray_sampling.py -> bench/ray.json). Needs an exported model (ARTIFACT).
bench-ray: setup-all
	$(BIN)/python bench/ray_sampling.py --model $(ARTIFACT) $(BENCH_ARGS)

# A plan of runs that outlives the session (cxr-sweep; runs under $$CXR_RUNS, default ~/cxr-runs):
#   nohup make sweep PLAN=bench/plans/recipe.toml > ~/cxr-runs/sweep.out 2>&1 &
PLAN        ?= bench/plans/recipe.toml
sweep: setup
	$(BIN)/cxr-sweep $(PLAN)

# The suite runs in TEST_JOBS worker processes (pytest-xdist), one test file to a worker at a time,
# so that a file's module fixtures are built once; TEST_JOBS=0 runs it in one process.
TEST_JOBS   ?= 2

test: setup-all
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

test-runtime: setup-runtime
	$(RBIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile tests/runtime

lint: setup
	$(BIN)/ruff check runtime training export utility sweep tests bench

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache .ruff_cache *.egg-info
