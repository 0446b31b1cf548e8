"""The host ports (HOST1, HOST2): payShield framing over TCP, optionally TLS.

Frame: 2-byte big-endian length, then the message (header, command code, fields, optional
0x19 + trailer). Each connection is its own task; a malformed frame gets an error response
or closes only that connection. The calls-per-second licence is enforced by a token bucket
shared by both ports: a command over the rate waits (as on the real device, whose licence
caps throughput) rather than failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable

from .host_commands import Outcome
from .product import MAX_MESSAGE_LENGTH, TCP_CONNECTIONS_PER_INTERFACE

Processor = Callable[[bytes, str, str], Awaitable[Outcome]]
FrameErrorSink = Callable[[str, str, str], None]


class RateLimiter:
    """Calls-per-second limit as a token bucket (burst of one second's calls).

    ``clock`` and ``sleep`` are injectable so tests can drive it without real time.
    """

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.lifted = False
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(rate)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def delay(self) -> float:
        """Take one call's token; how long the caller must wait before running it."""
        if self.lifted:
            return 0.0
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            await self._sleep(wait)


class HostPort:
    """One host interface (HOST1 or HOST2) listening on one address and port."""

    def __init__(self, name: str, processor: Processor, on_frame_error: FrameErrorSink) -> None:
        self.name = name
        self._processor = processor
        self._on_frame_error = on_frame_error
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self.port: int | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self, address: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(
            self._serve, address, port, ssl=tls, reuse_address=True, limit=MAX_MESSAGE_LENGTH + 2
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.close_connections()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self._server = None
        self.port = None

    async def close_connections(self) -> None:
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if peer else "?"
        if len(self._connections) >= TCP_CONNECTIONS_PER_INTERFACE:
            # The licence's connection count per host interface (NO reports it): refuse the next one.
            self._on_frame_error(self.name, peer_text,
                                 f"connection refused: {TCP_CONNECTIONS_PER_INTERFACE} connections already open")
            writer.close()
            return
        self._connections.add(task)
        try:
            while True:
                try:
                    prefix = await reader.readexactly(2)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        self._on_frame_error(self.name, peer_text, "truncated length prefix")
                    return
                length = int.from_bytes(prefix, "big")
                if length == 0 or length > MAX_MESSAGE_LENGTH:
                    # Nothing to answer (or no way to resynchronise): close this connection.
                    self._on_frame_error(self.name, peer_text, f"invalid message length {length}")
                    return
                try:
                    body = await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    self._on_frame_error(self.name, peer_text, "connection closed mid-message")
                    return
                outcome = await self._processor(body, self.name, peer_text)
                if outcome is None:
                    self._on_frame_error(self.name, peer_text, "message shorter than header + command")
                    return
                writer.write(len(outcome.response).to_bytes(2, "big") + outcome.response)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(BaseException):
                await writer.wait_closed()
