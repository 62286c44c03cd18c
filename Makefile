# The two commands a newcomer needs: `make run` and `make test`. Both set up what they need first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean redis

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis:
	@bash scripts/ensure-redis.sh

# With no SLACK_SIGNING_SECRET in the environment this is the offline demo (`--demo`): `slack-backend run` alone
# refuses to serve Slack without one.
run: $(STAMP) redis
	@bash scripts/start-local-redis.sh
	$(BIN)/slack-backend run $(if $(SLACK_SIGNING_SECRET),,--demo)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) redis
	TEST_DATABASE_URL="$$(bash scripts/ensure-postgres.sh)" $(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP) redis
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .run
