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
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lorahub demo

services:
	bash scripts/ensure-services

test: install services
	$(BIN)/python -m pytest --durations=30

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
