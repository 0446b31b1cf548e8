"""The host ports (HOST1, HOST2): payShield framing over TCP, optionally TLS.

Frame: 2-byte big-endian length, then the message (header, command code, fields, optional
0x19 + trailer). Each connection is its own task; a malformed frame gets an error response
or closes only that connection. The calls-per-second licence is enforced by a token bucket
shared by both ports: a command over the rate waits (as on the real device, whose licence
caps throughput) rather than failing.

A stalled client cannot hold a slot for long: a connection that starts no frame for
``idle_timeout`` seconds is closed, a frame (and a TLS handshake) must be complete within
``frame_timeout`` seconds of its first byte, and an answer must be read within
``frame_timeout`` too. When all of an interface's connections are taken, a newcomer is not
refused: the connection that has gone longest without an answer (never one whose command is
being executed) is closed to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .host_commands import Outcome
from .product import MAX_MESSAGE_LENGTH, TCP_CONNECTIONS_PER_INTERFACE

Processor = Callable[[bytes, str, str], Awaitable[Outcome]]
#: Where a port reports what went wrong on a connection: (port, peer, kind, message), kind being
#: ``framing`` (a malformed or incomplete frame), ``connection`` (timeouts, room made, refusals) or ``tls``.
ConnectionErrorSink = Callable[[str, str, str, str], None]

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_FRAME_TIMEOUT = 5.0


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """How many connections a host interface holds and how long one may stall."""

    max_connections: int = TCP_CONNECTIONS_PER_INTERFACE
    #: Seconds a connection may wait before starting its next frame.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Seconds to complete a frame once its first byte arrived, a TLS handshake, or to read an answer.
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("idle_timeout", "frame_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")


@dataclass(kw_only=True)
class _Connection:
    """One open host connection, as the slot keeper sees it."""

    task: asyncio.Task
    peer: str
    #: When it connected or last got an answer (the eviction order: oldest first).
    last_answer: float
    #: A command of it is being executed or answered: never evicted then.
    executing: bool = False


class _Closed(Exception):
    """The connection is to be closed; the message says why (for the error log)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


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


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, except that nothing is read until ``_serve`` decides on TLS.

    A TLS client sends its ClientHello at once; read as plain data before ``start_tls``, it
    would be lost to the handshake. ``_serve`` resumes reading (plain) or starts TLS.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]
        super().connection_made(transport)


class HostPort:
    """One host interface (HOST1 or HOST2) listening on one address and port.

    ``clock`` (monotonic seconds) orders connections for eviction; injectable for tests.
    """

    def __init__(
        self,
        name: str,
        processor: Processor,
        on_error: ConnectionErrorSink,
        *,
        limits: ConnectionLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._processor = processor
        self._on_error = on_error
        self.limits = limits or ConnectionLimits()
        self._clock = clock
        self._server: asyncio.base_events.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self._connections: dict[asyncio.Task, _Connection] = {}
        self.port: int | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self, address: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        # TLS is started per connection in _serve, so that a handshake counts against the
        # connection's slot and timeouts and a failed one reaches the error log.
        self._tls = tls
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return _StreamProtocol(asyncio.StreamReader(limit=MAX_MESSAGE_LENGTH + 2), self._serve)

        self._server = await loop.create_server(protocol, address, port, reuse_address=True)
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

    async def use_tls(self, tls: ssl.SSLContext | None, *, close_connections: bool = True) -> None:
        """Serve new connections with ``tls`` (None: plain TCP); by default cut the open ones."""
        self._tls = tls
        if close_connections:
            await self.close_connections()

    async def close_connections(self) -> None:
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _make_room(self, newcomer: str) -> bool:
        """Free a slot for ``newcomer`` if all are taken; False if every connection is executing."""
        if len(self._connections) < self.limits.max_connections:
            return True
        waiting = [c for c in self._connections.values() if not c.executing]
        if not waiting:
            self._on_error(self.name, newcomer, "connection",
                           f"connection refused: all {self.limits.max_connections} connections are executing commands")
            return False
        victim = min(waiting, key=lambda c: c.last_answer)  # ties: the older connection (dict order)
        del self._connections[victim.task]
        victim.task.cancel()
        self._on_error(self.name, victim.peer, "connection",
                       f"connection closed to make room for {newcomer}: {self.limits.max_connections} connections "
                       f"open, this one waited longest ({self._clock() - victim.last_answer:.0f} s) since its "
                       "last answer")
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if peer else "?"
        if not self._make_room(peer_text):
            writer.close()
            return
        connection = _Connection(task=task, peer=peer_text, last_answer=self._clock())
        self._connections[task] = connection
        try:
            if self._tls is None:
                writer.transport.resume_reading()  # type: ignore[attr-defined]
            else:
                peer_text = await self._start_tls(writer, self._tls, peer_text)
                connection.peer = peer_text
            while True:
                body = await self._read_frame(reader)
                if body is None:
                    return
                connection.executing = True
                outcome = await self._processor(body, self.name, peer_text)
                if outcome is None:
                    raise _Closed("framing", "message shorter than header + command")
                writer.write(len(outcome.response).to_bytes(2, "big") + outcome.response)
                connection.executing = False
                connection.last_answer = self._clock()
                try:
                    async with asyncio.timeout(self.limits.frame_timeout):
                        await writer.drain()
                except TimeoutError:
                    raise _Closed("connection", f"the client did not read its answer within "
                                                f"{self.limits.frame_timeout:g} s") from None
        except _Closed as closed:
            self._on_error(self.name, peer_text, closed.kind, closed.message)
        except (ConnectionError, ssl.SSLError, OSError):
            return
        except asyncio.CancelledError:
            return
        finally:
            if self._connections.get(task) is connection:
                del self._connections[task]
            writer.close()
            with contextlib.suppress(BaseException):
                await writer.wait_closed()

    async def _start_tls(self, writer: asyncio.StreamWriter, tls: ssl.SSLContext, peer: str) -> str:
        """Run the TLS handshake; returns the peer named with its certificate's subject, if any."""
        try:
            await asyncio.wait_for(writer.start_tls(tls), self.limits.frame_timeout)
        except TimeoutError:
            raise _Closed("tls", f"TLS handshake not complete within {self.limits.frame_timeout:g} s") from None
        except ssl.SSLError as exc:
            raise _Closed("tls", f"TLS handshake failed: {_tls_failure(exc)}") from None
        except (ConnectionError, OSError) as exc:
            raise _Closed("tls", f"TLS handshake failed: {exc.__class__.__name__}") from None
        subject = dict(item for rdn in (writer.get_extra_info("peercert") or {}).get("subject", ()) for item in rdn)
        return f"{peer} (CN={subject['commonName']})" if "commonName" in subject else peer

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next message; None when the client closed the connection between frames."""
        limits = self.limits
        try:
            first = await asyncio.wait_for(reader.readexactly(1), limits.idle_timeout)
        except asyncio.IncompleteReadError:
            return None
        except TimeoutError:
            raise _Closed("connection", f"idle for {limits.idle_timeout:g} s: closed") from None
        try:
            async with asyncio.timeout(limits.frame_timeout):
                try:
                    second = await reader.readexactly(1)
                except asyncio.IncompleteReadError:
                    raise _Closed("framing", "truncated length prefix") from None
                length = int.from_bytes(first + second, "big")
                if length == 0 or length > MAX_MESSAGE_LENGTH:
                    # Nothing to answer (or no way to resynchronise): close this connection.
                    raise _Closed("framing", f"invalid message length {length}")
                try:
                    return await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    raise _Closed("framing", "connection closed mid-message") from None
        except TimeoutError:
            raise _Closed("framing", f"incomplete message: not received within {limits.frame_timeout:g} s of "
                                     "its first byte") from None


#: What OpenSSL's reasons for a failed server-side handshake mean to the tenant reading the log.
_TLS_FAILURES = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate (this port needs mutual TLS)",
    "CERTIFICATE_VERIFY_FAILED": "the client certificate is not trusted",
    "WRONG_VERSION_NUMBER": "the client does not speak TLS (plain TCP to a TLS port?)",
    "HTTP_REQUEST": "the client does not speak TLS (plain TCP to a TLS port?)",
    "UNEXPECTED_EOF_WHILE_READING": "the client closed the connection during the handshake",
}


def _tls_failure(exc: ssl.SSLError) -> str:
    reason = exc.reason or exc.__class__.__name__
    meaning = _TLS_FAILURES.get(reason)
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        meaning = f"the client certificate is not trusted ({exc.verify_message})"
    return f"{meaning} [{reason}]" if meaning else reason
