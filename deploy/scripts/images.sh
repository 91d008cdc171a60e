#!/usr/bin/env bash
# Build the six service images (arb/<service>:<tag>) from the repository root.
#
#   deploy/scripts/images.sh                         # BASE_IMAGE=python:3.11-slim (a registry)
#   BASE_IMAGE=local deploy/scripts/images.sh        # no registry: debootstrap base (base_image.sh)
#   ENGINES=local BASE_IMAGE=local deploy/scripts/images.sh
#                                                    # + the engine stand-ins (arb-local/<engine>)
#
# The images share their first stage (deps, identical in every Dockerfile), so the
# dependencies are installed once and every other build takes them from the layer cache.
# With ARB_IMAGES_ENV=FILE it writes the image names it built there (KEY=VALUE lines that
# compose reads: ARB_IMAGE_*, BASE_IMAGE, *_IMAGE of the stand-ins), for compose_smoke.py.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

TAG="${ARB_IMAGE_TAG:-dev}"
PREFIX="${ARB_IMAGE_PREFIX:-arb}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
ENGINES="${ENGINES:-}"
SERVICES="venue-sim market-data strategy executor state reconciler"
ENV_OUT="${ARB_IMAGES_ENV:-}"

ensure_docker
if [ "$BASE_IMAGE" = "local" ]; then
    BASE_IMAGE="$(bash deploy/scripts/base_image.sh)"
fi
log "base image: $BASE_IMAGE"

REVISION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
CREATED="$(git log -1 --format=%cI 2>/dev/null || echo unknown)"

build() {  # build DOCKERFILE TAG [extra args]
    local file="$1" tag="$2"; shift 2
    local t0=$SECONDS attempt
    for attempt in 1 2; do
        # --network host: the build reaches the package registries the way this host does.
        if DOCKER_BUILDKIT=0 "$DOCKER" build --network host -q -f "$file" -t "$tag" \
                --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" . >/tmp/arb-build.$$.log 2>&1; then
            log "built $tag in $((SECONDS - t0)) s"
            return 0
        fi
        log "docker build $tag failed (attempt $attempt):"
        tail -n 25 /tmp/arb-build.$$.log >&2
    done
    return 1
}

for svc in $SERVICES; do
    build "deploy/docker/$svc.Dockerfile" "$PREFIX/$svc:$TAG" \
        --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED" \
        || die "image $PREFIX/$svc:$TAG did not build"
done

engine_env=""
if [ "$ENGINES" = "local" ]; then
    for engine in nats postgres redis prometheus; do
        build deploy/docker/engines.Dockerfile "arb-local/$engine:$TAG" --target "$engine" \
            || die "engine stand-in arb-local/$engine:$TAG did not build"
    done
    engine_env="NATS_IMAGE=arb-local/nats:$TAG
POSTGRES_IMAGE=arb-local/postgres:$TAG
REDIS_IMAGE=arb-local/redis:$TAG
PROMETHEUS_IMAGE=arb-local/prometheus:$TAG"
fi
rm -f /tmp/arb-build.$$.log

"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -E "^($PREFIX|arb-local)/" | grep ":$TAG " >&2 || true

if [ -n "$ENV_OUT" ]; then
    {
        echo "ARB_IMAGE_PREFIX=$PREFIX"
        echo "ARB_IMAGE_TAG=$TAG"
        echo "BASE_IMAGE=$BASE_IMAGE"
        [ -n "$engine_env" ] && echo "$engine_env"
    } > "$ENV_OUT"
    log "image names written to $ENV_OUT"
fi
