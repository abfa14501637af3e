# Two entry points (README): `make run` and `make test`. Both create .venv when it is missing and
# install the project into it (editable, with the dev and ray extras) whenever pyproject.toml changed.
# Not with --no-compile: the install took 86 s instead of 121 s, but the test suite's concurrent
# subprocesses then each compiled torch's modules on import, and pytest took 513 s instead of 311 s.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bench-installed

.PHONY: setup run site test test-slow bench-speed lint format

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/bench run --methods rodeo atom --protocol nd
	@dir=$$(COLUMNS=500 $(BIN)/bench run --methods rodeo atom --protocol nd --dry-run | sed -n 's/.*output: //p'); \
	echo "report of this run: $$dir/report.html"; \
	echo "leaderboard site:   $(BIN)/bench report $$dir --out site   (then open site/index.html)"

# The leaderboard site of the committed results (results/reference/*, results/baseline/*.csv) in site/.
SITE_INPUTS = $(wildcard results/reference/*/results.csv) $(wildcard results/baseline/*.csv)
site: $(STAMP)
	@if [ -z "$(strip $(SITE_INPUTS))" ]; then \
		echo "make site: no committed results: neither results/reference/*/results.csv nor results/baseline/*.csv exists"; \
		echo "  build a site of your own runs with: $(BIN)/bench report results/runs/<run_id> --out site"; \
		exit 1; \
	fi
	$(BIN)/bench report $(patsubst %/results.csv,%,$(filter %/results.csv,$(SITE_INPUTS))) \
		$(filter-out %/results.csv,$(SITE_INPUTS)) --out site

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench-speed: $(STAMP)
	$(BIN)/python -m pytest -m slow --benchmark-only tests/test_attack_speed.py tests/test_speed.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
