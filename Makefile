# Quick start: `make demo` (set up + run the main job), `make test` (set up + run the tests).
# Both create .venv when it is missing and install segexport into it with the tested pins.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.segexport-installed

.PHONY: demo test install triton-env benchmarks gpu-smoke clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job: train a tiny DeepLabv3+, export it, make its INT8 models (TensorRT and CPU
# targets), verify every variant against PyTorch and write builds/deeplabv3p/report.md.
# Stages are cached by content hash: a second run only verifies. Exit 1 if a budget breaks.
demo: $(STAMP)
	$(BIN)/segexport build deeplabv3p --int8

# A CPU tritonserver (nvidia-pytriton wheel, Python backend) and its stub's packages in .triton/,
# for the Triton repository tests (tests/triton_server.py says what and why).
TRITON_STAMP := .triton/env.json

$(TRITON_STAMP): tests/triton_server.py | $(STAMP)
	$(BIN)/python tests/triton_server.py install

triton-env: $(TRITON_STAMP)

test: $(STAMP) $(TRITON_STAMP)
	$(BIN)/python -m pytest -ra

# The TensorRT path on one GPU (about 6 minutes): needs torch with CUDA and the matching tensorrt
# wheel in $(VENV) (README: "TensorRT on a GPU"); without a GPU it says why in one line, exit 0.
gpu-smoke: $(STAMP)
	$(BIN)/python scripts/gpu_smoke.py

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/train_tiny.py

clean:
	rm -rf builds .pytest_cache .triton
