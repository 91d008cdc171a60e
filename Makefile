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

# ---------------------------------------------------------------------------------------------
# Deploy and observe (deploy/): images, staging with compose, production manifests, alerts.
# BASE_IMAGE=local (and ENGINES=local) build without an image registry, from Debian's packages
# (deploy/scripts/base_image.sh: debootstrap + docker import).
.PHONY: images compose-up compose-down compose-smoke k8s-validate rules-test deploy-check observe

BASE_IMAGE ?= python:3.11-slim
ENGINES ?=

# The six service images arb/<service>:dev (one shared dependency stage).
images:
	BASE_IMAGE=$(BASE_IMAGE) ENGINES=$(ENGINES) bash deploy/scripts/images.sh

# Staging on this host (deploy/compose, settings and secrets in deploy/compose/.env).
compose-up: images
	bash deploy/scripts/compose.sh up

# PURGE=1 also removes the volumes (ledger, NATS, Prometheus, Grafana data).
compose-down:
	bash deploy/scripts/compose.sh down

# The proof: images, up, all healthy, fills via the state API, Prometheus scraping, down -v.
compose-smoke:
	BASE_IMAGE=$(BASE_IMAGE) ENGINES=$(ENGINES) bash deploy/scripts/compose_smoke.sh

# Both kustomize overlays rendered and validated against the Kubernetes schemas offline.
k8s-validate: install
	bash deploy/scripts/k8s_validate.sh

# promtool check + unit tests of the alert rules.
rules-test:
	bash deploy/scripts/rules_test.sh

# Static checks of everything under deploy/ (generated files current, dashboards, compose,
# manifests); no Docker needed.
deploy-check: install rules-test k8s-validate
	$(UV) run pytest tests/deploy -q

# Prometheus on the dev stack: metrics cross-check and the FeedStale alert fired and resolved.
observe: install
	$(UV) run python deploy/scripts/observe_dev_stack.py
