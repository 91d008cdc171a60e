# Shared helpers of deploy/scripts/*.sh (sourced, not run).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Cached downloads that survive a fresh clone (the debootstrap tarball): outside the repo.
ARB_CI_CACHE="${ARB_CI_CACHE:-/var/cache/arb-ci}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $*"; fi
}

# apt_install CMD PACKAGE...: install the Debian packages when CMD is not on PATH.
apt_install() {
    local cmd="$1"; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and there is no apt-get: install $* by hand"
    log "installing $* (for $cmd)"
    if [ ! -f /var/lib/arb-ci-apt-updated ] || [ -n "$(find /var/lib/arb-ci-apt-updated -mmin +360 2>/dev/null)" ]; then
        as_root apt-get update -qq >/dev/null || log "apt-get update failed (trying the install anyway)"
        as_root touch /var/lib/arb-ci-apt-updated 2>/dev/null || true
    fi
    local i
    for i in 1 2 3; do
        if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
            command -v "$cmd" >/dev/null 2>&1 && return 0
        fi
        log "apt-get install $* failed (attempt $i), retrying"
        sleep $((i * 5))
    done
    die "could not install $* (needed for $cmd)"
}

# The docker CLI that matches the engine: Debian's docker.io CLI when present (another one on
# PATH, e.g. a newer client without buildx, may not speak the same builder).
docker_bin() {
    if [ -n "${DOCKER:-}" ]; then echo "$DOCKER"
    elif [ -x /usr/bin/docker ]; then echo /usr/bin/docker
    else command -v docker
    fi
}

# ensure_docker: the engine answers, else install docker.io and start dockerd (as root).
# A dockerd started here is recorded in $ARB_DOCKERD_PIDFILE (stop_docker_if_started).
ARB_DOCKERD_PIDFILE="${ARB_DOCKERD_PIDFILE:-/var/run/arb-ci-dockerd.pid}"
ensure_docker() {
    DOCKER="$(docker_bin || true)"
    if [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then export DOCKER; return 0; fi
    PATH="$PATH:/usr/sbin:/sbin" apt_install dockerd docker.io
    DOCKER="$(docker_bin)"
    export DOCKER
    local attempt i
    for attempt in 1 2 3; do
        log "starting dockerd (attempt $attempt), log /var/log/arb-dockerd.log"
        as_root sh -c 'setsid nohup dockerd >>/var/log/arb-dockerd.log 2>&1 </dev/null & echo $! > "$1"' \
            sh "$ARB_DOCKERD_PIDFILE"
        for i in $(seq 1 60); do
            if "$DOCKER" info >/dev/null 2>&1; then log "docker engine up"; return 0; fi
            sleep 1
        done
        log "dockerd did not answer in 60 s; last log lines:"
        tail -n 5 /var/log/arb-dockerd.log >&2 || true
        pkill_pidfile "$ARB_DOCKERD_PIDFILE"
        sleep 3
        rm -f /var/run/docker.pid
    done
    die "the Docker engine did not start (see /var/log/arb-dockerd.log)"
}

# Stop the dockerd that ensure_docker started (none started: nothing to do).
stop_docker_if_started() {
    [ -f "$ARB_DOCKERD_PIDFILE" ] || return 0
    log "stopping the dockerd started for this run"
    pkill_pidfile "$ARB_DOCKERD_PIDFILE"
    rm -f "$ARB_DOCKERD_PIDFILE"
}

# Stop the process whose pid is in a pid file (only that one).
pkill_pidfile() {
    local f="$1" pid
    [ -f "$f" ] || return 0
    pid="$(cat "$f" 2>/dev/null || true)"
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
}

# compose_cmd: `docker compose` (v2) when the plugin exists, else docker-compose (v1.29).
compose_cmd() {
    if "$(docker_bin)" compose version >/dev/null 2>&1; then
        echo "$(docker_bin) compose"
    else
        apt_install docker-compose docker-compose
        echo "docker-compose"
    fi
}

# Run a step and print how long it took.
timed() {
    local name="$1"; shift
    local t0=$SECONDS
    log "== $name"
    if "$@"; then
        log "== $name: ok in $((SECONDS - t0)) s"
    else
        local rc=$?
        log "== $name: FAILED (exit $rc) after $((SECONDS - t0)) s"
        return $rc
    fi
}

port_free() {  # port_free PORT: nothing listens on 127.0.0.1:PORT
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
