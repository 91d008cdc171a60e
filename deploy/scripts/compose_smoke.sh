#!/usr/bin/env bash
# `make compose-smoke`: build the images (unless SKIP_IMAGES=1), then prove the compose stack
# (deploy/scripts/compose_smoke.py: up, healthy, fills, Prometheus, down -v, nothing left).
#   BASE_IMAGE=local ENGINES=local deploy/scripts/compose_smoke.sh   # no image registry
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_docker
COMPOSE="$(compose_cmd)"
log "compose: $COMPOSE ($($COMPOSE version --short 2>/dev/null || $COMPOSE version | head -1))"
images_env="$(mktemp /tmp/arb-images.XXXXXX.env)"
trap 'rm -f "$images_env"' EXIT
if [ "${SKIP_IMAGES:-}" != "1" ]; then
    ARB_IMAGES_ENV="$images_env" bash deploy/scripts/images.sh
elif [ -n "${ARB_IMAGES_ENV:-}" ]; then
    cp "$ARB_IMAGES_ENV" "$images_env"
fi
DOCKER="$DOCKER" COMPOSE="$COMPOSE" python3 deploy/scripts/compose_smoke.py \
    --images-env "$images_env" "$@"
