# The two commands a newcomer needs: `make run` and `make test`. Both set up what they need first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions of everything installed (runtime, test and lint tools): upgrades are a deliberate `make lock` commit.
CONSTRAINTS := requirements/constraints.txt
# What every test run adds: a skipped test fails the run unless tests/allowed-skips.txt names it with a reason, and
# neither the PostgreSQL nor the browser tests may skip.
STRICT := FORBID_SKIPS=1 REQUIRE_POSTGRES=1 REQUIRE_BROWSER=1

.PHONY: run test test-slow lint typecheck unit bench clean redis postgres browser lock

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $(STAMP)

# Re-resolve the dev install to the newest versions pyproject allows and write them down. Commit the result only
# after `make test` and `make test-slow` pass with it.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade -e '.[dev]'
	@{ sed -n '1,3p' $(CONSTRAINTS); echo "pip==$$($(BIN)/python -m pip --version | cut -d' ' -f2)"; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@touch $(STAMP)

redis:
	@bash scripts/ensure-redis.sh

browser:
	@bash scripts/ensure-chromium.sh

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

# ensure-postgres.sh prints the URL on stdout and its reason on stderr; its failure stops the run here.
unit: $(STAMP) redis browser
	@url="$$(bash scripts/ensure-postgres.sh)" || { echo "make: no PostgreSQL for the tests (reason above)" >&2; exit 1; }; \
	echo "TEST_DATABASE_URL=$$url $(STRICT) pytest -m 'not slow'"; \
	TEST_DATABASE_URL="$$url" $(STRICT) $(BIN)/pytest -m "not slow"

# Soak, scale and fault scenarios: every test marked `slow`.
test-slow: $(STAMP) redis browser
	@url="$$(bash scripts/ensure-postgres.sh)" || { echo "make: no PostgreSQL for the tests (reason above)" >&2; exit 1; }; \
	echo "TEST_DATABASE_URL=$$url $(STRICT) pytest -m slow"; \
	TEST_DATABASE_URL="$$url" $(STRICT) $(BIN)/pytest -m slow

# The default: lint, types and every test not marked slow (a few minutes). CI (.ci/run) also runs test-slow.
test: lint typecheck unit

bench: $(STAMP) redis
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .run slack-backend.db slack-backend.db-wal slack-backend.db-shm
