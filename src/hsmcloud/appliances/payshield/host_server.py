"""The host ports (HOST1, HOST2): payShield framing over TCP, optionally TLS.

Frame: 2-byte big-endian length, then the message (header, command code, fields, optional
0x19 + trailer). Each connection is an asyncio protocol; a malformed frame gets an error response
or closes only that connection. The calls-per-second licence is enforced by a token bucket
shared by both ports and every process serving them (:mod:`.host_shared`): a command over the
rate waits (as on the real device, whose licence caps throughput) rather than failing.

A stalled client cannot hold a slot for long: a connection that starts no frame for
``idle_timeout`` seconds is closed, a frame (and a TLS handshake) must be complete within
``frame_timeout`` seconds of its first byte, and an answer must be read within
``frame_timeout`` too. When all of an interface's connections are taken, a newcomer is not
refused: the connection that has gone longest without an answer (never one whose command is
being executed) is closed to make room. With several processes serving an interface the slots
are theirs together; a process closes its connection whose slot another one gave away.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .host_commands import Outcome
from .host_shared import INTERFACES, SharedHostState
from .product import MAX_MESSAGE_LENGTH, TCP_CONNECTIONS_PER_INTERFACE

#: Executes one message: the outcome at once, or an awaitable of it (a command that must wait for
#: the licence's rate); None when the message is shorter than header + command.
Processor = Callable[[bytes, str, str], "Outcome | None | Awaitable[Outcome | None]"]
#: Where a port reports what went wrong on a connection: (port, peer, kind, message), kind being
#: ``framing`` (a malformed or incomplete frame), ``connection`` (timeouts, room made, refusals) or ``tls``.
ConnectionErrorSink = Callable[[str, str, str, str], None]

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_FRAME_TIMEOUT = 5.0
LISTEN_BACKLOG = 128
#: How often a process looks for its connections whose slot another process gave away.
SWEEP_SECONDS = 0.05
#: How often a connection whose answer is still in the send buffer checks whether it was read.
UNREAD_POLL_SECONDS = 0.05
#: Frames of one connection executed in a row before the other connections get their turn.
FRAMES_PER_TURN = 16
#: Unanswered input a connection may hold before reading from it pauses.
MAX_PENDING_BYTES = 4 * MAX_MESSAGE_LENGTH


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


class RateLimiter:
    """Calls-per-second limit as a token bucket (burst of one second's calls).

    The bucket lives in a :class:`SharedHostState` so every process serving the host ports
    draws from the same one; without one given, it is private to this limiter. ``clock`` and
    ``sleep`` are injectable so tests can drive it without real time.
    """

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: SharedHostState | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        if shared is None:
            shared = SharedHostState(workers=1, commands=(), rate=rate, slots=1, shared=False)
            shared.reset_bucket(clock())
        self._shared = shared

    @property
    def rate(self) -> int:
        return self._shared.rate

    @rate.setter
    def rate(self, value: int) -> None:
        self._shared.rate = value

    @property
    def lifted(self) -> bool:
        return self._shared.lifted

    @lifted.setter
    def lifted(self, value: bool) -> None:
        self._shared.lifted = value

    def delay(self) -> float:
        """Take one call's token; how long the caller must wait before running it."""
        return self._shared.take_token(self._clock())

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            await self._sleep(wait)


class _Connection(asyncio.Protocol):
    """One host connection: frames in, answers out, one command at a time, in order.

    Timeouts use one timer per connection, re-armed only when it fires (not per frame).
    """

    def __init__(self, port: HostPort) -> None:
        self.port = port
        self.loop = port._loop
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = bytearray()
        self.slot = -1
        self.gen = -1
        self.task: asyncio.Task | None = None  # the command being executed (or the TLS handshake)
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.closing = False
        self.ready = False  # plain data may be read (no TLS, or the handshake is done)
        self.frame_started: float | None = None  # monotonic time of the first byte of a pending frame
        self.idle_since = self.loop.time()
        self.unread_since: float | None = None  # an answer waits in the send buffer since
        self.timer: asyncio.TimerHandle | None = None
        self.eof = False
        self.reading_paused = False  # too much unanswered input

    # -- life cycle ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        port = self.port
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        admission = port._admit(self, peer)
        if admission is None:
            transport.abort()
            return
        self.slot, self.gen = admission
        port._open[self.slot] = self
        port._slots.count_connect(port._owner - 1, port._interface)
        if port._tls is None:
            self.ready = True
        else:
            transport.pause_reading()  # type: ignore[attr-defined]
            self.task = self.loop.create_task(self._start_tls(port._tls))
        self._arm_at(self.idle_since + port.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def _forget(self) -> None:
        port = self.port
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.slot >= 0:
            if port._open.get(self.slot) is self:
                del port._open[self.slot]
            port._slots.release(port._interface, self.slot, self.gen)
            self.slot = -1
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self, kind: str | None = None, message: str = "", *, abort: bool = False) -> None:
        """Close this connection; ``kind``/``message`` go to the error log."""
        if self.closing:
            return
        self.closing = True
        if kind is not None:
            self.port._on_error(self.port.name, self.peer, kind, message)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self._forget()

    # -- timeouts --------------------------------------------------------------------------

    def _arm_at(self, when: float) -> None:
        """Make sure the timer fires no later than ``when`` (loop time)."""
        timer = self.timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        if not self.closing:
            self.timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.closing:
            return
        now = self.loop.time()
        limits = self.port.limits
        if self.unread_since is not None and self.transport is not None and not self.transport.get_write_buffer_size():
            self._drained()  # the client read its answer (no callback below the high-water mark)
        if not self.ready:
            pass  # the TLS handshake has its own timeout
        elif self.unread_since is not None and now - self.unread_since >= limits.frame_timeout:
            self.close("connection", f"the client did not read its answer within {limits.frame_timeout:g} s")
            return
        elif self.frame_started is not None and now - self.frame_started >= limits.frame_timeout:
            self.close("framing", f"incomplete message: not received within {limits.frame_timeout:g} s of "
                                  "its first byte")
            return
        elif (self.task is None and self.frame_started is None and self.unread_since is None
              and now - self.idle_since >= limits.idle_timeout):
            self.close("connection", f"idle for {limits.idle_timeout:g} s: closed")
            return
        # Next check: when the earliest pending deadline falls due.
        deadlines = [self.idle_since + limits.idle_timeout]
        if self.frame_started is not None:
            deadlines.append(self.frame_started + limits.frame_timeout)
        if self.unread_since is not None:
            deadlines.append(min(now + UNREAD_POLL_SECONDS, self.unread_since + limits.frame_timeout))
        self.timer = self.loop.call_at(max(now + 0.005, min(deadlines)), self._tick)

    # -- TLS -------------------------------------------------------------------------------

    async def _start_tls(self, tls: ssl.SSLContext) -> None:
        limits = self.port.limits
        assert self.transport is not None
        try:
            transport = await self.loop.start_tls(self.transport, self, tls, server_side=True,
                                                  ssl_handshake_timeout=limits.frame_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            self.close("tls", f"TLS handshake not complete within {limits.frame_timeout:g} s", abort=True)
            return
        except ssl.SSLError as exc:
            self.close("tls", f"TLS handshake failed: {_tls_failure(exc)}", abort=True)
            return
        except (ConnectionError, OSError) as exc:
            self.close("tls", f"TLS handshake failed: {exc.__class__.__name__}", abort=True)
            return
        if transport is None or self.closing:
            self.close()
            return
        self.transport = transport
        subject = dict(item for rdn in (transport.get_extra_info("peercert") or {}).get("subject", ()) for item in rdn)
        if "commonName" in subject:
            self.peer = f"{self.peer} (CN={subject['commonName']})"
        self.task = None
        self.ready = True
        self.idle_since = self.loop.time()
        if self.buffer:
            self._next()

    # -- frames ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.buffer and self.frame_started is None:
            self.frame_started = now = self.loop.time()
            self._arm_at(now + self.port.limits.frame_timeout)
        self.buffer += data
        if len(self.buffer) > MAX_PENDING_BYTES and not self.reading_paused:
            # A client that sends faster than its commands are answered waits (TCP flow control).
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if self.task is None and self.ready:
            self._next()

    def eof_received(self) -> bool:
        self.eof = True
        if self.task is None and self.unread_since is None:
            self._next()
        return True  # keep the transport open until an answer in progress is sent

    def _at_eof(self) -> None:
        pending = len(self.buffer)
        if pending == 1:
            self.close("framing", "truncated length prefix")
        elif pending >= 2:
            self.close("framing", "connection closed mid-message")
        else:
            self.close()

    def _take_frame(self) -> bytes | None:
        """The next complete message in the buffer, or None (incomplete, or the connection closed)."""
        buffer = self.buffer
        if len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if length == 0 or length > MAX_MESSAGE_LENGTH:
                # Nothing to answer (or no way to resynchronise): close this connection.
                self.close("framing", f"invalid message length {length}")
                return None
            if len(buffer) >= 2 + length:
                body = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                if buffer:
                    self.frame_started = now = self.loop.time()
                    self._arm_at(now + self.port.limits.frame_timeout)
                else:
                    self.frame_started = None
                return body
        if self.eof:
            self._at_eof()
        elif self.reading_paused and len(buffer) <= MAX_PENDING_BYTES // 2 and self.unread_since is None:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return None

    def _next(self) -> None:
        """Execute the complete frames in the buffer, one at a time, in order."""
        port = self.port
        for _ in range(FRAMES_PER_TURN):
            if self.closing or self.task is not None or self.unread_since is not None:
                return
            body = self._take_frame()
            if body is None:
                return
            if not port._slots.begin(port._interface, self.slot, self.gen):
                self.close()  # another process gave this connection's slot to a newcomer
                return
            result = port._processor(body, port.name, self.peer)
            if result is None or isinstance(result, Outcome):
                self._answer(result)  # answered at once: no task needed
            else:
                self.task = self.loop.create_task(self._execute(result))
                return
        # A client that pipelines many frames lets the other connections have their turn.
        self.loop.call_soon(self._next)

    async def _execute(self, pending: Awaitable[Outcome | None]) -> None:
        try:
            outcome = await pending
        except asyncio.CancelledError:
            return
        self.task = None
        self._answer(outcome)
        self._next()

    def _answer(self, outcome: Outcome | None) -> None:
        port = self.port
        if self.closing:
            return
        if outcome is None:
            self.close("framing", "message shorter than header + command")
            return
        transport = self.transport
        assert transport is not None
        response = outcome.response
        transport.write(len(response).to_bytes(2, "big") + response)
        now = self.loop.time()
        port._slots.answered(port._interface, self.slot, self.gen, port._clock())
        self.idle_since = now
        if transport.get_write_buffer_size():
            self.unread_since = now
            transport.pause_reading()  # type: ignore[attr-defined]
            self._arm_at(now + min(UNREAD_POLL_SECONDS, port.limits.frame_timeout))

    def resume_writing(self) -> None:
        self._drained()

    def _drained(self) -> None:
        if self.unread_since is None or self.closing or self.transport is None:
            return
        if self.transport.get_write_buffer_size():
            return
        self.unread_since = None
        if not self.reading_paused:
            self.transport.resume_reading()  # type: ignore[attr-defined]
        if self.task is None:
            self._next()


class HostPort:
    """One host interface (HOST1 or HOST2) listening on one address and port.

    ``clock`` (monotonic seconds) orders connections for eviction; injectable for tests. With
    ``shared`` (the appliance's :class:`SharedHostState`) the connection slots are those of the
    whole interface, shared by every process serving it; ``owner`` is this process's number.
    """

    def __init__(
        self,
        name: str,
        processor: Processor,
        on_error: ConnectionErrorSink,
        *,
        limits: ConnectionLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedHostState | None = None,
        owner: int = 1,
    ) -> None:
        self.name = name
        self._processor = processor
        self._on_error = on_error
        self.limits = limits or ConnectionLimits()
        self._clock = clock
        self._shared = shared is not None
        self._slots = shared or SharedHostState(workers=1, commands=(), slots=self.limits.max_connections,
                                                shared=False)
        self._interface = INTERFACES.index(name) if shared is not None and name in INTERFACES else 0
        self._owner = owner
        self._server: asyncio.base_events.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self._open: dict[int, _Connection] = {}
        self._sweeper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop
        self.port: int | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        """Open connections of this interface (in every process that serves it)."""
        return self._slots.connections(self._interface)

    async def start(self, address: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen on (address, port) with a socket of its own."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return await self.start_on(sock, tls)

    async def start_on(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> int:
        """Serve connections accepted on a listening socket (possibly one of several sharing the port)."""
        # TLS is started per connection, so that a handshake counts against the connection's slot
        # and timeouts and a failed one reaches the error log.
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._server = await self._loop.create_server(lambda: _Connection(self), sock=sock, backlog=LISTEN_BACKLOG)
        self.port = sock.getsockname()[1]
        if self._shared:
            self._sweeper = self._loop.create_task(self._sweep())
        return self.port

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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
        connections = list(self._open.values())
        for connection in connections:
            connection.close(abort=True)
        for connection in connections:
            with contextlib.suppress(BaseException):
                await connection.closed

    def _admit(self, connection: _Connection, peer: tuple | None) -> tuple[int, int] | None:
        """A slot for a new connection; if all are taken, the one waiting longest since its last
        answer is closed to make room (never one executing a command). None: refuse it."""
        slots = self._slots
        admission = slots.admit(self._interface, self._owner, self._clock(), peer, self.limits.max_connections)
        if admission is None:
            self._on_error(self.name, connection.peer, "connection",
                           f"connection refused: all {self.limits.max_connections} connections are executing commands")
            return None
        if admission.victim_owner:
            victim_peer = "?"
            if admission.victim_owner == self._owner:
                victim = self._open.pop(admission.victim_slot, None)
                if victim is not None:
                    victim_peer = victim.peer
                    victim.slot = -1  # its slot is the newcomer's now
                    victim.close(abort=True)
            # else: the process that holds it sees its slot taken (sweep) and closes it.
            self._on_error(self.name, victim_peer, "connection",
                           f"connection closed to make room for {connection.peer}: {self.limits.max_connections} "
                           f"connections open, this one waited longest ({admission.victim_idle:.0f} s) since its "
                           "last answer")
        return admission.slot, admission.gen

    async def _sweep(self) -> None:
        """Close connections whose slot another process gave to a newcomer."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            for slot, connection in list(self._open.items()):
                if connection.task is None and not self._slots.holds(self._interface, slot, connection.gen):
                    self._open.pop(slot, None)
                    connection.slot = -1
                    connection.close(abort=True)


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
