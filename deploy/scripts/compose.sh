#!/usr/bin/env bash
# `make compose-up` / `make compose-down`: the staging stack of deploy/compose on this host.
#   compose.sh up     create deploy/compose/.env (random secrets) when missing, start, wait
#                     until every container is healthy, print where things are
#   compose.sh down   stop and remove the containers and networks (volumes kept; PURGE=1
#                     removes the volumes too: the ledger, NATS and Prometheus data)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT/deploy/compose"
ensure_docker
COMPOSE="$(compose_cmd)"

# A setting as compose resolves it: the environment first, then .env.
env_value() {
    if [ -n "${!1:-}" ]; then echo "${!1}"; else grep -E "^$1=" .env | tail -1 | cut -d= -f2-; fi
}

case "${1:-}" in
up)
    if [ ! -f .env ]; then
        umask 077
        sed -e "s/change-me-[a-z]*/__SECRET__/" .env.example | while IFS= read -r line; do
            printf '%s\n' "${line/__SECRET__/$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
        done > .env
        log "created deploy/compose/.env with random secrets (keep it; never commit it)"
    fi
    $COMPOSE up -d --no-build
    project="$(env_value COMPOSE_PROJECT_NAME)"; project="${project:-compose}"
    log "waiting for the containers of project $project to be healthy"
    for i in $(seq 1 150); do
        states="$("$DOCKER" ps -a --filter "label=com.docker.compose.project=$project" \
                  --format '{{.Label "com.docker.compose.service"}}={{.Status}}')"
        if [ -n "$states" ] && ! grep -qvE '\(healthy\)|Exited \(0\)' <<<"$states"; then
            break
        fi
        if grep -qE 'Exited \([1-9]' <<<"$states"; then
            grep -E 'Exited \([1-9]' <<<"$states" >&2
        fi
        sleep 2
    done
    "$DOCKER" ps -a --filter "label=com.docker.compose.project=$project" \
        --format 'table {{.Label "com.docker.compose.service"}}\t{{.Status}}\t{{.Ports}}'
    if grep -qvE '\(healthy\)|Exited \(0\)' <<<"$states"; then
        die "not every container is healthy: $COMPOSE logs <service>"
    fi
    bind="$(env_value BIND_ADDR)"
    cat >&2 <<EOT
state API   http://${bind}:$(env_value STATE_API_PORT)/api/fills   (OpenAPI: /docs)
simulator   http://${bind}:$(env_value SIM_CONTROL_PORT)/control/venues
Prometheus  http://${bind}:$(env_value PROMETHEUS_PORT)/alerts
Grafana     http://${bind}:$(env_value GRAFANA_PORT)/   (profile grafana; anonymous viewer)
EOT
    ;;
down)
    if [ "${PURGE:-}" = "1" ]; then
        $COMPOSE down -v --remove-orphans
    else
        $COMPOSE down --remove-orphans
    fi
    ;;
*)
    die "usage: compose.sh up|down"
    ;;
esac
