# make demo: set up .venv and run the blog pipeline.  make test: set up .venv and run the tests.
# make test-fast: the inner loop, every test that is not marked slow (under a minute on 2 cores).
# Both spread the test files over up to 4 processes (pytest-xdist, a file to a process, so module
# fixtures are built once and the fuzz module counts its cases); the torchrun tests then run alone
# (under load a rank's refusal can race torchrun's teardown). pytest -q runs everything in one process.
# torch==2.13.0 is installed before the project so pip never pulls a multi-GB CUDA build;
# pass TORCH='torch' (or your own pin) to use another build, e.g. make demo TORCH='torch==2.5.1'.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DISTRIBUTED := tests/commands/test_distributed_cli.py

.PHONY: setup demo smoke test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/lora run configs/posit.yaml

smoke: $(STAMP)
	$(BIN)/lora run configs/smoke.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --ignore=$(DISTRIBUTED)
	$(BIN)/python -m pytest -q $(DISTRIBUTED)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
