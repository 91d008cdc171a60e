#!/usr/bin/env bash
# A local base image for machines that reach no image registry (CI here):
# `debootstrap --variant=minbase bookworm` with python3 + venv, this machine's CA bundle
# (package downloads may pass a TLS proxy that only it trusts), then `docker import`.
#
#   deploy/scripts/base_image.sh            # prints the image name (arb-local/base:bookworm-py3)
#
# The root filesystem tarball is cached in $ARB_CI_CACHE (default /var/cache/arb-ci), keyed by
# the package list, so a rerun only re-imports it (or does nothing when the image exists).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,passwd"
KEY="$(printf '%s %s %s v1' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)"
IMAGE="${ARB_LOCAL_BASE_IMAGE:-arb-local/base:$SUITE-py3-$KEY}"
TARBALL="$ARB_CI_CACHE/debootstrap-$SUITE-minbase-$KEY.tar"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

ensure_docker

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "base image $IMAGE exists"
    echo "$IMAGE"
    exit 0
fi

if [ ! -s "$TARBALL" ]; then
    apt_install debootstrap debootstrap
    PATH="$PATH:/usr/sbin:/sbin"
    as_root mkdir -p "$ARB_CI_CACHE"
    rootfs="$(mktemp -d /tmp/arb-debootstrap.XXXXXX)"
    trap 'as_root rm -rf "$rootfs"' EXIT
    log "debootstrap --variant=minbase --include=$PACKAGES $SUITE ($MIRROR)"
    ok=""
    for attempt in 1 2 3; do
        if as_root debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
                >"$ARB_CI_CACHE/debootstrap.log" 2>&1; then
            ok=1; break
        fi
        log "debootstrap failed (attempt $attempt): $(tail -n 2 "$ARB_CI_CACHE/debootstrap.log" | tr '\n' ' ')"
        as_root rm -rf "$rootfs"; rootfs="$(mktemp -d /tmp/arb-debootstrap.XXXXXX)"
        sleep $((attempt * 10))
    done
    [ -n "$ok" ] || die "debootstrap failed 3 times, see $ARB_CI_CACHE/debootstrap.log"
    if [ -s "$CA_BUNDLE" ]; then
        as_root mkdir -p "$rootfs/etc/ssl/certs"
        as_root cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    else
        log "warning: no $CA_BUNDLE on this machine; the image trusts no CA"
    fi
    as_root sh -c "rm -rf '$rootfs'/var/cache/apt/archives/*.deb '$rootfs'/var/lib/apt/lists/* '$rootfs'/tmp/*"
    as_root tar -C "$rootfs" --numeric-owner -cf "$TARBALL.tmp" .
    as_root mv "$TARBALL.tmp" "$TARBALL"
    log "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi

log "docker import $TARBALL -> $IMAGE"
"$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE"
