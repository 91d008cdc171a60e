"""Small helpers for the services' tests (no fakes: real engines only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .bus import Bus


async def wait_until(pred: Callable[[], object], timeout: float = 10.0, *, step: float = 0.02,
                     what: str = "condition") -> None:
    """Poll ``pred`` until it is truthy; fail the test naming ``what`` after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(step)


@asynccontextmanager
async def connected_bus(nats_url: str, prefix: str, service: str = "test", *,
                        mode: str = "paper", session: str = "test") -> AsyncIterator[Bus]:
    """A connected bus with this test's streams provisioned; closed afterwards."""
    bus = Bus(nats_url, service=service, session=session, mode=mode, prefix=prefix)
    await bus.connect()
    await bus.provision()
    try:
        yield bus
    finally:
        await bus.close()


class TcpProxy:
    """A loopback TCP relay to a real server, for outage tests: :meth:`cut` drops every
    connection and refuses new ones (the server looks down to whoever connects through the
    proxy), :meth:`restore` lets connections through again. Runs its own event loop in a
    thread, so sync and async tests can use it alike.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self.target = (target_host, target_port)
        self.port = 0
        self._up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("tcp proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self._drop_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)
        self._loop.close()

    def url_for(self, url: str) -> str:
        """``url`` with its host:port replaced by this proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = (auth + "@" if auth else "") + f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> None:
        self._up = False
        self._loop.call_soon_threadsafe(self._drop_all)

    def restore(self) -> None:
        self._up = True

    def _drop_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # proxy shutting down


async def delete_prefixed_streams(nats_url: str, prefix: str) -> None:
    """Delete every JetStream stream of the deployment ``prefix`` (``<PREFIX>_*``): the
    clean-up of a test or benchmark run on shared engines."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix.upper() + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()
