"""Runtime wiring: the control app (ServiceRuntime) plus one uvicorn server per venue, all in
one asyncio loop, with the market ticker and the WebSocket flushers as background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from arb_common.runtime import ServiceRuntime
from arb_common.settings import load_settings

from .config import SimSettings
from .control import register_control
from .venue import Simulator, Venue

logger = logging.getLogger(__name__)

SERVICE = "venue-sim"


def venue_server(venue: Venue, host: str, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server for one venue (REST + WebSocket, websockets backend)."""
    config = uvicorn.Config(
        venue.asgi, host=host, port=venue.port if port is None else port, log_config=None,
        access_log=False, lifespan="off", ws="websockets-sansio", ws_ping_interval=20.0,
        ws_ping_timeout=60.0,
    )
    server = uvicorn.Server(config)
    # Signals belong to the ServiceRuntime, which stops the venues through its shutdown hook.
    # (uvicorn >= 0.29 captures signals in ``capture_signals``; older ones used
    # ``install_signal_handlers``; disable both.)
    server.capture_signals = contextlib.nullcontext  # type: ignore[assignment,method-assign]
    setattr(server, "install_signal_handlers", lambda: None)  # noqa: B010
    return server


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = ephemeral), for tests that need the port up front."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build(settings: SimSettings) -> tuple[ServiceRuntime, Simulator]:
    rt = ServiceRuntime(SERVICE, settings)
    sim = Simulator(settings)
    register_control(rt.app, sim, rt.check_token)
    rt.info_extra["venues"] = lambda: {v.id: v.rest_url for v in sim.venues.values()}
    return rt, sim


def main() -> None:
    settings = load_settings(SimSettings)
    rt, sim = build(settings)
    servers: dict[str, uvicorn.Server] = {}

    def venues_up() -> tuple[bool, str]:
        down = [vid for vid, s in servers.items() if not s.started]
        return (not down and bool(servers)), (f"venue servers not up: {down}" if down else "")

    rt.readiness.probe("venues", venues_up)

    async def start(rt: ServiceRuntime) -> None:
        for name, coro in sim.background():
            rt.spawn(coro, name)
        tasks = []
        for venue in sim.venues.values():
            server = venue_server(venue, settings.http_host)
            servers[venue.id] = server
            tasks.append(rt.spawn(server.serve(), f"venue-{venue.id}"))
            logger.info("venue listening venue=%s rest_url=%s ws_url=%s api_key=%s...",
                        venue.id, venue.rest_url, venue.ws_url, venue.creds.api_key[:8])

        async def stop_servers() -> None:
            for server in servers.values():
                server.should_exit = True
            await asyncio.wait(tasks, timeout=5)

        rt.on_shutdown(stop_servers)

    rt.run(start)
