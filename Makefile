# Quick start: `make demo` (set up + run the main job), `make test` (set up + run the tests).
# Both create .venv when it is missing and install segexport into it with the tested pins.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.segexport-installed

.PHONY: demo test install benchmarks clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job as far as it exists: train, evaluate, export (rewrites + ONNX + parity on
# ONNX Runtime) and the TensorRT-compatibility check. Becomes `segexport build deeplabv3p --int8`.
demo: $(STAMP)
	$(BIN)/segexport train deeplabv3p
	$(BIN)/segexport evaluate builds/deeplabv3p/reference
	$(BIN)/segexport export builds/deeplabv3p/reference
	$(BIN)/segexport check builds/deeplabv3p/export/model.onnx

test: $(STAMP)
	$(BIN)/python -m pytest -ra

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/train_tiny.py

clean:
	rm -rf builds .pytest_cache
