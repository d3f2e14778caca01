# budgetloop — every target creates .venv from the lock file on first use.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: demo test test-all bench lint typecheck venv clean lock

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## The main job: a year of closed-loop budget decisions on the example market.
demo: $(STAMP)
	$(BIN)/budgetloop demo --weeks 52 --report-dir report

## Fast, still meaningful subset (everything but the long statistical checks).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n $(JOBS) -q

## Everything, including the long statistical checks.
test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -q

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy budgetloop guardrails connectors agents service

## Re-pin the lock from the current environment (maintainers only).
lock:
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -vE "^(budgetloop|pip)==" > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
