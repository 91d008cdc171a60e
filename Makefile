# Entry points for a fresh machine: `make run` starts the dev stack, `make test` runs every test.
# Both install first (uv, then the locked workspace), so they work on a new checkout.

UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: install run test lint

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen || $(UV) sync --all-packages

# The dev stack in the foreground with a live view; Ctrl-C stops everything.
# Pass options with ARGS, e.g. `make run ARGS="--mode paper --session-mode clean"`.
run: install
	$(UV) run arbctl up $(ARGS)

# Every test. Engines: ARB_TEST_NATS_URL / ARB_TEST_DATABASE_URL / ARB_TEST_REDIS_URL when
# set, else embedded NATS, PostgreSQL and Redis started from the Python wheels.
test: install
	$(UV) run pytest $(ARGS)

lint: install
	$(UV) run ruff check .
