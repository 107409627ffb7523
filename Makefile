# The two set-up commands (see README.md): `make demo` and `make test`.
# Both create the virtual environment on first use and reuse it afterwards; every install
# step goes through constraints.txt so that torch stays at the pinned CPU build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-fast lint bench clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev,hf,mlflow,lightning,report,ray,keras,s3]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/flipless demo

test: $(INSTALLED)
	$(BIN)/ruff check --output-format concise src tests benchmarks
	$(BIN)/pytest

test-fast: $(INSTALLED)
	$(BIN)/pytest -m "not slow and not distributed and not browser"

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(INSTALLED)
	$(BIN)/python benchmarks/metrics_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
