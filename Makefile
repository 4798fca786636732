# Two entry points a fresh machine (Python 3.11+, pip, make) needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench default-model clean web-tools aarch64-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime only (onnxruntime, NumPy, click): a real, non-editable install, then the default model.
demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet .
	$(BIN)/textgen generate "This is Z"

# Everything (trainer, TensorFlow, test tools), then lint and the whole suite.
# The browser tests' tools: Debian's chromium and onnxruntime-web from npm (pinned).
ORT_WEB := .cache/ort-web/node_modules/onnxruntime-web/dist
web-tools:
	@command -v chromium >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null))
	@test -f $(ORT_WEB)/ort.wasm.min.js || npm install --silent --no-audit --no-fund --prefix .cache/ort-web onnxruntime-web@1.30.0

# The aarch64 check's tools: qemu-user-static, Debian arm64 Python 3.11 in a sysroot, and
# aarch64 wheels. onnxruntime 1.20.1: 1.32's aarch64 wheel segfaults on import under qemu 7.2.
AARCH64 := .cache/aarch64
aarch64-tools: $(BIN)/python
	@test -x $(AARCH64)/sysroot/usr/bin/python3.11 || sh tests/aarch64/sysroot.sh $(AARCH64)
	@test -d $(AARCH64)/wheels/onnxruntime || $(BIN)/python -m pip install --quiet --target $(AARCH64)/wheels --python-version 3.11 --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 'numpy==1.26.4' 'onnxruntime==1.20.1' 'click==8.1.7'

test: $(BIN)/python web-tools aarch64-tools
	$(BIN)/python -m pip install --quiet -e '.[train,test,bench]'
	$(BIN)/ruff check runtime trainer tests benchmarks examples
	$(BIN)/ruff format --check runtime trainer tests benchmarks examples
	$(BIN)/python -m pytest

bench: $(BIN)/python web-tools
	$(BIN)/python -m pip install --quiet -e '.[train,test,bench]'
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_footprint.py
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_context.py
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_int8.py
	$(BIN)/python benchmarks/check_compat.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_stateful.py
	$(BIN)/python benchmarks/fuzz_models.py
	$(BIN)/python benchmarks/kill_trials.py
	$(BIN)/python benchmarks/soak.py
	$(BIN)/python benchmarks/bench_quality.py

# Retrains the shipped model exactly as artifacts/default/MODEL_CARD.md says.
default-model: $(BIN)/python
	$(BIN)/textgen-train train --seed 0 --out artifacts/default --force --quiet

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .cache
