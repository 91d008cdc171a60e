"""Service runtime: FastAPI + uvicorn with ``/healthz``, ``/readyz``, ``/metrics``, ``/info``,
JSON logs and graceful SIGTERM.

Usage::

    rt = ServiceRuntime("strategy", settings)
    async def start(rt: ServiceRuntime) -> None:   # connect, provision, start tasks
        ...
    rt.run(start)

``start`` runs after the HTTP server is up (so ``/healthz`` answers during slow starts).
Shutdown hooks run in reverse order on SIGTERM/SIGINT. A background task registered with
:meth:`ServiceRuntime.spawn` that crashes stops the process with a non-zero exit code
(crash-only design: the supervisor restarts it, and a restart is the same path as a start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from .gctune import freeze_startup, install_pause_metric
from .logs import setup_logging
from .settings import CommonSettings, Profile

logger = logging.getLogger(__name__)

VERSION = "0.1.0"

BAD_REQUESTS = Counter(
    "arb_http_bad_requests_total", "HTTP requests rejected as invalid", ["path"]
)
READY = Gauge("arb_service_ready", "1 when /readyz answers 200")
UP_SINCE = Gauge("arb_service_start_time_seconds", "Unix time the process started")


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


class Readiness:
    """Named dependency checks; ``/readyz`` is 200 only when all are ok."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[bool, str]] = {}
        self._probes: dict[str, Callable[[], tuple[bool, str]]] = {}
        self._degraded: dict[str, str] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self._static[name] = (ok, detail)

    def probe(self, name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        self._probes[name] = fn

    def degrade(self, name: str, reason: str | None) -> None:
        """Non-fatal problems (e.g. Redis down, serving from memory): reported, still ready."""
        if reason is None:
            self._degraded.pop(name, None)
        else:
            self._degraded[name] = reason

    def report(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        for name, (ok, detail) in self._static.items():
            checks[name] = {"ok": ok, "detail": detail}
        for name, fn in self._probes.items():
            try:
                ok, detail = fn()
            except Exception as exc:  # noqa: BLE001 - a failing probe is a not-ready answer
                ok, detail = False, f"probe failed: {exc!r}"
            checks[name] = {"ok": ok, "detail": detail}
        ready = all(c["ok"] for c in checks.values())
        missing = [f"{n}: {c['detail'] or 'not ok'}" for n, c in checks.items() if not c["ok"]]
        body: dict[str, Any] = {"ready": ready, "checks": checks, "missing": missing}
        if self._degraded:
            body["degraded"] = dict(self._degraded)
        return ready, body


class ServiceRuntime:
    def __init__(self, name: str, settings: CommonSettings, *, version: str = VERSION) -> None:
        self.name = name
        self.settings = settings
        self.version = version
        self.readiness = Readiness()
        self.info_extra: dict[str, Callable[[], Any]] = {}
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self._shutdown: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._fatal: BaseException | None = None
        self.app = FastAPI(
            title=f"arb {name}", version=version, default_response_class=OrjsonResponse
        )
        self._routes()

    # ------------------------------------------------------------ HTTP
    def _routes(self) -> None:
        app = self.app

        @app.exception_handler(RequestValidationError)
        async def _invalid(request: Request, exc: RequestValidationError) -> Response:
            BAD_REQUESTS.labels(request.url.path).inc()
            errors = [
                {
                    "parameter": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body",
                    "in": str(e.get("loc", ("?",))[0]),
                    "error": e.get("msg"),
                }
                for e in exc.errors()
            ]
            names = ", ".join(e["parameter"] for e in errors)
            return OrjsonResponse({"detail": f"invalid parameter: {names}", "errors": errors}, 422)

        @app.get("/healthz")
        async def healthz() -> dict[str, Any]:
            return {"status": "alive", "service": self.name}

        @app.get("/readyz")
        async def readyz() -> Response:
            ready, body = self.readiness.report()
            READY.set(1 if ready else 0)
            body["service"] = self.name
            return OrjsonResponse(body, status_code=200 if ready else 503)

        @app.get("/metrics")
        async def metrics() -> Response:
            ready, _ = self.readiness.report()
            READY.set(1 if ready else 0)
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        @app.get("/info")
        async def info() -> dict[str, Any]:
            out: dict[str, Any] = {
                "service": self.name,
                "version": self.version,
                "profile": self.settings.profile.value,
                "mode": self.settings.mode.value,
                "session": self.settings.session,
                "config_digest": self.settings.digest(),
                "uptime_s": round(time.time() - self.started_at, 3),
            }
            for key, fn in self.info_extra.items():
                out[key] = fn()
            return out

    def check_token(self, request: Request) -> None:
        """Control endpoints: token required outside dev (``Authorization: Bearer ...``)."""
        from fastapi import HTTPException

        if not token_ok(self.settings, request.headers.get("authorization")):
            raise HTTPException(status_code=401, detail="control token required")

    # ------------------------------------------------------------ lifecycle
    def on_shutdown(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._shutdown.append(fn)

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        exc = task.exception()
        if exc is not None:
            logger.critical("background task crashed task=%s error=%r", task.get_name(), exc,
                            exc_info=exc)
            self._fatal = exc
            self.stopping.set()

    def run(self, start: Callable[[ServiceRuntime], Awaitable[None]]) -> None:
        setup_logging(self.name, self.settings.log_level)
        with asyncio.Runner(loop_factory=loop_factory(self.settings.event_loop)) as runner:
            code = runner.run(self._main(start))
        raise SystemExit(code)

    async def _main(self, start: Callable[[ServiceRuntime], Awaitable[None]]) -> int:
        UP_SINCE.set(self.started_at)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        config = uvicorn.Config(
            self.app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        # Signals are ours (graceful stop with shutdown hooks), not uvicorn's.
        server.capture_signals = contextlib.nullcontext  # type: ignore[assignment,method-assign]
        http = asyncio.create_task(server.serve(), name="http")
        await asyncio.sleep(0)
        logger.info("starting service=%s mode=%s session=%s port=%d", self.name,
                    self.settings.mode.value, self.settings.session, self.settings.http_port)
        # Not ready until start() returned: the HTTP server is up before the service has
        # registered its own checks, and an empty check list would read as ready.
        self.readiness.set("started", False, "starting")
        install_pause_metric()
        try:
            await start(self)
            # What start() built lives as long as the process: out of the collector's way.
            frozen = freeze_startup()
            logger.info("gc: %d startup objects frozen", frozen)
            self.readiness.set("started", True)
        except Exception as exc:  # noqa: BLE001 - log one line and exit non-zero
            logger.critical("start failed service=%s error=%r", self.name, exc, exc_info=exc)
            self._fatal = exc
            self.stopping.set()
        stop_wait = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({stop_wait, http}, return_when=asyncio.FIRST_COMPLETED)
        if http.done() and not self.stopping.is_set():
            logger.critical("http server stopped unexpectedly (port %d in use?)",
                            self.settings.http_port)
            self._fatal = RuntimeError("http server stopped")
        self.stopping.set()
        logger.info("stopping service=%s", self.name)
        for fn in reversed(self._shutdown):
            try:
                await asyncio.wait_for(fn(), timeout=15)
            except Exception as exc:  # noqa: BLE001 - keep shutting down
                logger.error("shutdown hook failed error=%r", exc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        server.should_exit = True
        try:
            await asyncio.wait_for(http, timeout=5)
        except (TimeoutError, Exception):  # noqa: BLE001
            pass
        stop_wait.cancel()
        logger.info("stopped service=%s", self.name)
        return 1 if self._fatal is not None else 0


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop`` (when installed; it comes with ``uvicorn[standard]``) or None: the stock
    loop."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - a platform without uvloop wheels
            logger.warning("uvloop not installed: the standard asyncio event loop runs")
            return None
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return None


async def connect_bus(rt: ServiceRuntime) -> Any:
    """Connect to NATS, provision the streams, and wire the ``nats`` readiness probe."""
    from .bus import Bus

    s = rt.settings
    bus = Bus(s.nats_url, service=rt.name, session=s.session, mode=s.mode.value,
              prefix=s.bus_prefix, stream_replicas=s.stream_replicas)
    await bus.connect()
    await bus.provision()
    rt.readiness.probe("nats", lambda: (bus.is_connected, "" if bus.is_connected else
                                        "not connected to NATS"))
    rt.on_shutdown(bus.close)
    return bus


def token_ok(settings: CommonSettings, authorization: str | None) -> bool:
    """Is ``authorization`` (an ``Authorization`` header value, HTTP or a NATS request
    header) good for a control action? Outside the dev profile the control token is
    required (constant-time comparison); in dev, a configured token is still enforced."""
    import hmac

    token = settings.control_token
    if token is None:
        return settings.profile is Profile.dev
    given = (authorization or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())
