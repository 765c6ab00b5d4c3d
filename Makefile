# Two commands on a fresh machine: `make run` (the app at localhost:7860), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(BIN)/python app.py

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

screenshots: $(VENV)/.installed-test  # docs/screenshot.png from the real app in headless Chromium
	SRWEB_SCREENSHOT=$(CURDIR)/docs/screenshot.png $(BIN)/python -m pytest -q tests/test_screenshot.py

bench: $(VENV)/.installed
	$(BIN)/srweb bench

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
