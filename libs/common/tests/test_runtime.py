from __future__ import annotations

import httpx
from fastapi import Query

from arb_common.runtime import ServiceRuntime
from arb_common.settings import CommonSettings


async def test_health_ready_metrics_info_and_422_naming_the_parameter() -> None:
    rt = ServiceRuntime("demo", CommonSettings())
    rt.readiness.set("nats", False, "not connected to NATS")

    @rt.app.get("/api/things")
    async def things(limit: int = Query(100, ge=1, le=1000)) -> dict[str, int]:
        return {"limit": limit}

    transport = httpx.ASGITransport(app=rt.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["missing"] == ["nats: not connected to NATS"]
        rt.readiness.set("nats", True)
        rt.readiness.degrade("redis", "unreachable; serving from memory")
        r = await c.get("/readyz")
        assert r.status_code == 200 and "redis" in r.json()["degraded"]
        m = await c.get("/metrics")
        assert "arb_service_ready" in m.text
        info = (await c.get("/info")).json()
        assert info["service"] == "demo" and len(info["config_digest"]) == 16
        bad = await c.get("/api/things", params={"limit": "5000"})
        assert bad.status_code == 422 and "limit" in bad.json()["detail"]
        m = await c.get("/metrics")
        assert 'arb_http_bad_requests_total{path="/api/things"} 1.0' in m.text


async def test_not_ready_until_start_returned_even_before_the_service_registered_checks(
        ) -> None:
    import asyncio
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rt = ServiceRuntime("demo", CommonSettings(http_port=port))
    release = asyncio.Event()

    async def start(_: ServiceRuntime) -> None:
        await release.wait()  # e.g. restoring state; no check of its own registered yet

    main = asyncio.create_task(rt._main(start))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(200):
                try:
                    r = await c.get("/readyz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
            assert r.status_code == 503 and r.json()["missing"] == ["started: starting"]
            release.set()
            for _ in range(100):
                r = await c.get("/readyz")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.02)
            assert r.status_code == 200
    finally:
        rt.stopping.set()
        await asyncio.wait_for(main, 10)


def test_event_loop_setting_picks_uvloop_by_default() -> None:
    import uvloop
    from pydantic import ValidationError

    from arb_common.runtime import loop_factory
    from arb_common.settings import CommonSettings

    assert CommonSettings().event_loop == "uvloop"
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    try:
        CommonSettings(event_loop="trio")  # type: ignore[arg-type]
    except ValidationError as exc:
        assert "event_loop" in str(exc)
    else:
        raise AssertionError("a bad event_loop was accepted")
