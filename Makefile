# The two commands of the README:
#   make demo   set everything up and run `lorahub demo` on the embedded default base model
#   make test   set everything up and run the whole test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lorahub-installed

.PHONY: demo test install services schemas docs bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# Reinstall when the project's dependencies change.
# torchao (lorahub train --quantize int8) goes into a folder of its own, not the venv: once importable, diffusers
# imports it on every model load; bitsandbytes (--quantize nf4) beside it. tests/training/test_train_flux.py puts
# the folder on the path of the processes it starts for those two.
$(STAMP): pyproject.toml setup.py lorahub/_sha256x2.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/quant torchao==0.18.0 bitsandbytes==0.50.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lorahub demo

services:
	bash scripts/ensure-services

# One pytest worker per core (at most 4; tests run torch on one thread each, see tests/conftest.py).
test: install services
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadgroup --durations=30

schemas: install
	$(BIN)/python -m lorahub.schemas

# docs/cli.md from the click commands (tests/test_docs.py fails when it is stale)
docs: install
	$(BIN)/python scripts/gen_cli_docs.py

bench: install
	bash benchmarks/run-all

lint: install
	$(BIN)/ruff check lorahub cli registry space schemas tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
