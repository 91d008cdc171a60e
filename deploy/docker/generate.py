"""Write one Dockerfile per service (``deploy/docker/<service>.Dockerfile``) from one template.

    python3 deploy/docker/generate.py          # rewrite the Dockerfiles
    python3 deploy/docker/generate.py --check  # exit 1 if a committed Dockerfile differs

Every Dockerfile starts with the same ``deps`` stage (the third-party dependencies of all six
services, installed from ``uv.lock``), byte for byte, so Docker builds it once and every other
image reuses it from the layer cache. Only the stages after it differ per service: the
service's own ``uv sync`` (which drops what that service does not need and installs the
workspace packages, non-editable) and the slim runtime stage that copies the venv.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "docker"
UV_VERSION = "0.13.9"
# Imports every module of the package given as argv[1] and of arb_common.
# (__main__ modules excepted: importing one runs the service.)
IMPORT_ALL_PY = ("import importlib, pkgutil, sys; "
                 "[importlib.import_module(m.name) for p in (sys.argv[1], 'arb_common') "
                 "for m in pkgutil.walk_packages(importlib.import_module(p).__path__, p + '.') "
                 "if not m.name.endswith('__main__')]")
# HEALTHCHECK: GET /healthz on the port the service listens on (ARB_HTTP_PORT, set in the image).
HEALTHCHECK_PY = ("import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + "
                  "os.environ['ARB_HTTP_PORT'] + '/healthz', timeout=4)")


@dataclass(frozen=True)
class Service:
    name: str  # image / process name
    package: str  # workspace package
    module: str  # python -m <module>
    port: int
    sources: tuple[str, ...]  # workspace members whose source the image needs
    extra_files: tuple[str, ...] = field(default=())  # copied into /app as they are
    description: str = ""


SERVICES: tuple[Service, ...] = (
    Service("venue-sim", "arb-venue-sim", "arb_venue_sim", 8090,
            ("libs/common", "services/venue-sim"),
            description="Simulated Binance-dialect venues with a control API (dev/test/demo)"),
    Service("market-data", "arb-market-data", "arb_market_data", 8081,
            ("libs/common", "services/market-data"),
            description="Venue WebSocket feeds to L2 books on NATS"),
    Service("strategy", "arb-strategy", "arb_strategy", 8082,
            ("libs/common", "services/strategy"),
            description="Executable-spread engine, RiskGuard, intents"),
    Service("executor", "arb-executor", "arb_executor", 8083,
            ("libs/common", "services/executor"),
            description="Two-leg order execution on the venues"),
    Service("state", "arb-state", "arb_state", 8084,
            ("libs/common", "services/state"),
            extra_files=("services/state/alembic.ini", "services/state/migrations"),
            description="Ledger (PostgreSQL), hot state (Redis), query API; Alembic migrations"),
    Service("reconciler", "arb-reconciler", "arb_reconciler", 8085,
            ("libs/common", "services/executor", "services/reconciler"),
            description="Startup gate and drift checks against the venues"),
)


def workspace_members() -> list[str]:
    """Member directories (relative, sorted) from the root pyproject's workspace globs."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out: set[str] = set()
    for pattern in conf["tool"]["uv"]["workspace"]["members"]:
        for path in ROOT.glob(pattern):
            if (path / "pyproject.toml").is_file():
                out.add(path.relative_to(ROOT).as_posix())
    return sorted(out)


def deps_stage() -> str:
    members = workspace_members()
    copies = "\n".join(f"COPY {m}/pyproject.toml {m}/" for m in members)
    packages = " ".join(f"--package {s.package}" for s in SERVICES)
    return f"""\
# ---------------------------------------------------------------------------------------------
# deps: the same in every service's Dockerfile (generated), so it is built once and cached.
# Third-party dependencies of all services, exactly as pinned in uv.lock.
FROM ${{BASE_IMAGE}} AS deps
ENV PYTHONDONTWRITEBYTECODE=1 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    UV_PYTHON_DOWNLOADS=never \\
    UV_PYTHON=python3 \\
    UV_LINK_MODE=copy \\
    UV_COMPILE_BYTECODE=1 \\
    UV_PROJECT_ENVIRONMENT=/app/.venv \\
    UV_CACHE_DIR=/opt/uv-cache
RUN python3 -m venv /opt/uv \\
 && /opt/uv/bin/pip install --no-cache-dir uv=={UV_VERSION}
WORKDIR /src
COPY pyproject.toml uv.lock ./
{copies}
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace {packages}
"""


def service_stages(svc: Service) -> str:
    copies = "\n".join(f"COPY {src}/ {src}/" for src in svc.sources)
    extra = "".join(f"COPY {path} /app/{path}\n" for path in svc.extra_files)
    return f"""\

# ---------------------------------------------------------------------------------------------
# build: only what {svc.name} needs (uv sync is exact: other services' packages are removed).
FROM deps AS build
{copies}
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --package {svc.package}
# Every module of the service (and of arb_common) imports: an undeclared dependency fails here.
RUN /app/.venv/bin/python -c "{IMPORT_ALL_PY}" {svc.module}

# ---------------------------------------------------------------------------------------------
# runtime: the base image, the venv, a non-root user. No build tools, no uv, no cache.
FROM ${{BASE_IMAGE}} AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \\
        --shell /usr/sbin/nologin arb
ENV PATH=/app/.venv/bin:$PATH \\
    PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    ARB_HTTP_HOST=0.0.0.0 \\
    ARB_HTTP_PORT={svc.port}
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
{extra}USER 10001:10001
EXPOSE {svc.port}
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \\
    CMD ["python3", "-c", "{HEALTHCHECK_PY}"]
ENTRYPOINT ["python3", "-m", "{svc.module}"]

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="arb-{svc.name}" \\
      org.opencontainers.image.description="{svc.description}" \\
      org.opencontainers.image.version="${{VERSION}}" \\
      org.opencontainers.image.revision="${{REVISION}}" \\
      org.opencontainers.image.created="${{CREATED}}" \\
      org.opencontainers.image.source="deploy/docker/{svc.name}.Dockerfile" \\
      org.opencontainers.image.vendor="arb"
"""


def render(svc: Service) -> str:
    header = f"""\
# arb {svc.name} image. GENERATED by deploy/docker/generate.py: edit that, then run it.
# Build from the repository root:
#   docker build -f deploy/docker/{svc.name}.Dockerfile -t arb/{svc.name}:dev .
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and python3 -m venv.
ARG BASE_IMAGE=python:3.11-slim

"""
    return header + deps_stage() + service_stages(svc)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for svc in SERVICES:
        path = OUT / f"{svc.name}.Dockerfile"
        text = render(svc)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT).as_posix())
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python3 deploy/docker/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
