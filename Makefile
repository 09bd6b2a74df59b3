# `make demo` and `make test` each create .venv when missing, install into it, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out

.PHONY: demo test lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DEMO_DIR)
	@for script in demo/[0-9]*.sh; do \
		PATH="$(CURDIR)/$(BIN):$$PATH" bash $$script $(DEMO_DIR) || exit 1; \
	done
	@echo "demo outputs are under $(DEMO_DIR)/"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check medchallenge tests bench

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
