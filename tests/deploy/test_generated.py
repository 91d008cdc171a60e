"""Generated files are current, and the service Dockerfiles keep their shape."""

from __future__ import annotations

import re

import pytest

from .conftest import DEPLOY, load_module

dockerfiles = load_module("deploy/docker/generate.py")
dashboards = load_module("deploy/grafana/generate.py")
k8s = load_module("deploy/k8s/generate.py")


@pytest.mark.parametrize("generator", [dockerfiles, dashboards, k8s],
                         ids=["dockerfiles", "dashboards", "k8s"])
def test_committed_output_is_what_the_generator_writes(generator) -> None:  # type: ignore[no-untyped-def]
    assert generator.main(["--check"]) == 0, "run the generator and commit its output"


def _deps_stage(text: str) -> str:
    start = text.index("FROM ${BASE_IMAGE} AS deps")
    return text[start:text.index("\n# ---", start)]


def test_every_service_image_shares_one_identical_dependency_stage() -> None:
    stages = {svc.name: _deps_stage((DEPLOY / "docker" / f"{svc.name}.Dockerfile").read_text())
              for svc in dockerfiles.SERVICES}
    assert len(stages) == 6
    assert len(set(stages.values())) == 1, "the deps stage must be byte-identical (layer cache)"
    stage = next(iter(stages.values()))
    assert "uv.lock" in stage and "--frozen" in stage and "--no-install-workspace" in stage
    for svc in dockerfiles.SERVICES:
        assert f"--package {svc.package}" in stage


@pytest.mark.parametrize("svc", dockerfiles.SERVICES, ids=lambda s: s.name)
def test_service_dockerfile_is_multistage_nonroot_with_healthcheck_and_labels(svc) -> None:  # type: ignore[no-untyped-def]
    text = (DEPLOY / "docker" / f"{svc.name}.Dockerfile").read_text()
    assert text.startswith("#") and "ARG BASE_IMAGE=python:3.11-slim\n" in text
    assert len(re.findall(r"^FROM ", text, re.M)) == 3
    runtime = text[text.index("AS runtime"):]
    assert "COPY --from=build /app/.venv /app/.venv" in runtime
    assert "uv" not in runtime.split("USER")[0].replace("/app/.venv", "")  # no uv at runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert f"EXPOSE {svc.port}" in runtime
    assert f'ENTRYPOINT ["python3", "-m", "{svc.module}"]' in runtime
    for label in ("title", "version", "revision", "created", "source"):
        assert f"org.opencontainers.image.{label}=" in runtime


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "**/tests", ".arb", "**/__pycache__"):
        assert entry in ignored


def test_state_image_carries_the_migrations() -> None:
    text = (DEPLOY / "docker" / "state.Dockerfile").read_text()
    assert "COPY services/state/alembic.ini /app/services/state/alembic.ini" in text
    assert "COPY services/state/migrations /app/services/state/migrations" in text
