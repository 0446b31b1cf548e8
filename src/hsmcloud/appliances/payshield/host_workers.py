"""The processes that serve HOST1 and HOST2, so host commands use every core.

The appliance binds, for each host interface, one listening socket per worker on the same
address and port (``SO_REUSEPORT``: the kernel spreads new connections over them), starts the
workers (forked from a ``forkserver`` that has the host-command code loaded) with their
sockets, and closes its own copies: only workers accept. Every change of the security domain,
the settings or TLS is sent to every worker over its control pipe and acknowledged before
the management call that made it returns. Workers send error-log entries back over an event
pipe; the appliance writes them (one writer for the state database).

:class:`InProcessHosts` does the same with one runtime inside the appliance's own event loop
(``host_workers=0``): for embedding and for tests of the host ports themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import types
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from .host_runtime import HostRuntime, run_worker
from .host_server import LISTEN_BACKLOG, ConnectionLimits
from .host_shared import SharedHostState, mp_context

log = logging.getLogger(__name__)

#: Seconds a worker may take to start or to apply one change.
WORKER_REPLY_SECONDS = 30.0
_PRELOAD = ["hsmcloud.appliances.payshield.host_runtime"]
_preload_lock = threading.Lock()


@contextlib.contextmanager
def _without_main_module():
    """Start a worker without it importing this program's ``__main__`` (multiprocessing would run
    a script without a ``__name__`` guard again): the worker needs nothing from it."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class HostWorkerError(RuntimeError):
    """A host worker did not start, or did not apply a change."""


def bind_listeners(address: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on (address, port), all with SO_REUSEPORT; port 0 picks one for all."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))
            port = sock.getsockname()[1]
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class InProcessHosts:
    """HOST1/HOST2 served by this process's event loop."""

    def __init__(self, *, shared: SharedHostState, limits: ConnectionLimits,
                 sink: Callable[[list[dict]], None]) -> None:
        self.shared = shared
        self.runtime = HostRuntime(0, shared, limits, lambda entry: sink([entry]))
        self.count = 1

    async def start(self, binds: dict[str, tuple[str, int]]) -> dict[str, int]:
        sockets = {name: bind_listeners(address, port, 1)[0] for name, (address, port) in binds.items()}
        ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
        await self.runtime.start(sockets)
        return ports

    def push(self, message: dict[str, Any]) -> None:
        self.runtime.apply(message)

    async def apush(self, message: dict[str, Any]) -> None:
        await self.runtime.handle(message)

    def drain(self) -> None:
        """Error-log entries are written as they happen here: nothing waits."""

    def alive(self) -> bool:
        return bool(self.runtime.ports)

    @property
    def pids(self) -> list[int]:
        return [os.getpid()]

    async def stop(self) -> None:
        await self.runtime.stop()


class _Worker:
    def __init__(self, index: int, process: Any, control: Any, events: Any) -> None:
        self.index, self.process, self.control, self.events = index, process, control, events
        self.pid: int | None = None
        self.alive = True


class HostWorkers:
    """``count`` worker processes serving HOST1/HOST2 (see the module docstring)."""

    def __init__(self, *, count: int, shared: SharedHostState, limits: ConnectionLimits, name: str,
                 sink: Callable[[list[dict]], None]) -> None:
        self.count = count
        self.shared = shared
        self.limits = limits
        self.name = name
        self._sink = sink
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one change at a time, from the loop or a thread
        self._events_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None and w.alive]

    def alive(self) -> bool:
        return any(w.alive for w in self._workers)

    async def start(self, binds: dict[str, tuple[str, int]]) -> dict[str, int]:
        self._loop = asyncio.get_running_loop()
        groups = {}
        try:
            for name, (address, port) in binds.items():
                groups[name] = bind_listeners(address, port, self.count)
            ports = {name: socks[0].getsockname()[1] for name, socks in groups.items()}
            await asyncio.to_thread(self._spawn, groups)
        finally:
            for socks in groups.values():  # the workers have theirs; the appliance accepts nothing
                for sock in socks:
                    sock.close()
        for worker in self._workers:
            self._loop.add_reader(worker.events.fileno(), self._drain_events_from_loop)
            self._loop.add_reader(worker.process.sentinel, self._exited, worker)
        return ports

    def _spawn(self, groups: dict[str, list[socket.socket]]) -> None:
        ctx = mp_context()
        with _preload_lock:
            ctx.set_forkserver_preload(_PRELOAD)
        try:
            for i in range(self.count):
                control, child_control = ctx.Pipe()
                events, child_events = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=run_worker, name=f"{self.name}-host-{i}", daemon=True,
                    args=(i, {name: socks[i] for name, socks in groups.items()}, self.shared, self.limits,
                          child_control, child_events),
                )
                with _without_main_module():
                    process.start()
                child_control.close()
                child_events.close()
                self._workers.append(_Worker(i, process, control, events))
            for worker in self._workers:
                kind, pid = self._reply(worker)
                if kind != "ready":
                    raise HostWorkerError(f"host worker {worker.index} did not start: {pid}")
                worker.pid = pid
        except BaseException:
            self._kill()
            raise

    def _reply(self, worker: _Worker) -> tuple[str, Any]:
        """The worker's answer on its control pipe; its error-log entries are written meanwhile."""
        while True:
            ready = wait([worker.control, worker.events, worker.process.sentinel], WORKER_REPLY_SECONDS)
            if not ready:
                raise HostWorkerError(f"host worker {worker.index} did not answer within {WORKER_REPLY_SECONDS:g} s")
            if worker.events in ready:
                self.drain()
            if worker.control in ready:
                try:
                    return worker.control.recv()
                except (EOFError, OSError) as exc:
                    worker.alive = False
                    raise HostWorkerError(f"host worker {worker.index} is gone") from exc
            elif worker.process.sentinel in ready:
                worker.alive = False
                raise HostWorkerError(f"host worker {worker.index} exited (code {worker.process.exitcode})")

    def push(self, message: dict[str, Any]) -> None:
        """Send a change to every worker and wait until each applied it."""
        with self._lock:
            live = [w for w in self._workers if w.alive]
            for worker in live:
                try:
                    worker.control.send(message)
                except OSError:
                    worker.alive = False
            failures = []
            for worker in live:
                if not worker.alive:
                    continue
                try:
                    kind, detail = self._reply(worker)
                except HostWorkerError as exc:
                    failures.append(str(exc))
                    continue
                if kind != "ok":
                    failures.append(f"host worker {worker.index}: {detail}")
            if failures:
                raise HostWorkerError("; ".join(failures))

    async def apush(self, message: dict[str, Any]) -> None:
        await asyncio.to_thread(self.push, message)

    def drain(self) -> None:
        """Write every error-log entry the workers have sent so far."""
        with self._events_lock:
            entries = []
            for worker in self._workers:
                with contextlib.suppress(EOFError, OSError):
                    while worker.events.poll():
                        entries.append(worker.events.recv())
            if entries:
                self._sink(entries)  # one transaction for all of them

    def _drain_events_from_loop(self) -> None:
        if self._events_lock.locked():
            return  # a thread is draining them
        self.drain()

    def _exited(self, worker: _Worker) -> None:
        assert self._loop is not None
        self._loop.remove_reader(worker.process.sentinel)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(worker.events.fileno())
        if not worker.alive:
            return
        worker.alive = False
        self.drain()
        freed = self.shared.release_owner(worker.index + 1)
        log.warning("%s: host worker %d exited (code %s); %d connection(s) lost", self.name, worker.index,
                    worker.process.exitcode, freed)
        self._sink([{"source": "HOST1/HOST2", "command": "--", "error_code": "worker",
                     "peer": "-", "message": f"host worker {worker.index} exited (code {worker.process.exitcode}); "
                                             f"{freed} connection(s) lost; the other workers go on serving"}])

    async def stop(self) -> None:
        if self._loop is not None:
            for worker in self._workers:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(worker.events.fileno())
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(worker.process.sentinel)
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        with self._lock:
            for worker in self._workers:
                if worker.alive:
                    with contextlib.suppress(OSError):
                        worker.control.send({"op": "stop"})
            for worker in self._workers:
                if worker.alive:
                    with contextlib.suppress(HostWorkerError):
                        self._reply(worker)
            self.drain()
            self._kill()

    def _kill(self) -> None:
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.alive = False
            for conn in (worker.control, worker.events):
                with contextlib.suppress(OSError):
                    conn.close()
            with contextlib.suppress(ValueError):
                worker.process.close()
        self._workers.clear()
