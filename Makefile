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

demo: $(STAMP)
	$(BIN)/segexport train deeplabv3p
	$(BIN)/segexport evaluate builds/deeplabv3p/reference

test: $(STAMP)
	$(BIN)/python -m pytest -ra

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/train_tiny.py

clean:
	rm -rf builds .pytest_cache
