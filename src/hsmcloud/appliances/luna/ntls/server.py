"""The NTLS listener: mutually authenticated TLS on the appliance's address (TCP 1792 by default).

Only client certificates that are registered on the appliance and assigned to at least one
partition are trusted: they are the listener's trust anchors, so OpenSSL itself refuses an
unknown, replaced or expired certificate with the TLS alert. Every refusal is logged the way
Luna's NTLS daemon logs it (``syslog tail`` shows it), for example::

    NTLS[8508]: info : 0 : Incoming connection request... : 127.0.0.1/59415
    NTLS[8508]: Error message from SSLAccept is : error:14094418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca
    NTLS[8508]: Error during SSL accept ( RC_SSL_ERROR )
    NTLS[8508]: info : 0xc0000711 : Fail to establish a secure channel with client : 127.0.0.1/59415 : RC_SSL_FAILED_HANDSHAKE
    NTLS[8508]: info : 0 : NTLS Client "Unknown host name" Connection instance removed : 127.0.0.1/59415

Blocking sockets, one thread per connection: the cryptography behind a call (RSA signing,
key generation) releases the GIL, so connections use every core. After the handshake the
connection is handed to the dispatcher (``serve_connection``), which speaks the NTLS
protocol (docs/ntls-protocol.md) until the client goes away.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..core.appliance_core import ApplianceCore
from ..core.clients import RegisteredClient

log = logging.getLogger(__name__)

DEFAULT_PORT = 1792
#: Luna's NTLS receive timeout default (receiveTimeoutTimer, 20 s); here it bounds the handshake.
HANDSHAKE_TIMEOUT_SECONDS = 20
#: The older Luna SA allowed 800 simultaneous NTLS connections.
MAX_CONNECTIONS = 800
UNKNOWN_CLIENT = "Unknown host name"

#: How OpenSSL 1.0.2 (what Luna 7's NTLS logs) names a handshake failure, by Python's reason.
_OPENSSL_ERRORS = {
    "TLSV1_ALERT_UNKNOWN_CA": ("14094418", "ssl3_read_bytes", "tlsv1 alert unknown ca"),
    "SSLV3_ALERT_BAD_CERTIFICATE": ("14094412", "ssl3_read_bytes", "sslv3 alert bad certificate"),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": ("14094415", "ssl3_read_bytes", "sslv3 alert certificate expired"),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": ("14094416", "ssl3_read_bytes", "sslv3 alert certificate unknown"),
    "TLSV1_ALERT_DECRYPT_ERROR": ("1409441B", "ssl3_read_bytes", "tlsv1 alert decrypt error"),
    "TLSV1_ALERT_PROTOCOL_VERSION": ("1409442E", "ssl3_read_bytes", "tlsv1 alert protocol version"),
    "CERTIFICATE_VERIFY_FAILED": ("14089086", "ssl3_get_client_certificate", "certificate verify failed"),
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "140890C7", "ssl3_get_client_certificate", "peer did not return a certificate"),
    "WRONG_VERSION_NUMBER": ("1408F10B", "ssl3_get_record", "wrong version number"),
    "HTTP_REQUEST": ("1407609C", "SSL23_GET_CLIENT_HELLO", "http request"),
    "UNSUPPORTED_PROTOCOL": ("1408A10B", "ssl3_get_client_hello", "wrong version number"),
    "NO_SHARED_CIPHER": ("1408A0C1", "ssl3_get_client_hello", "no shared cipher"),
}


class Dispatcher(Protocol):
    """What the listener hands connections to (``ntls/dispatcher.py``)."""

    def serve_connection(self, sock: ssl.SSLSocket, *, client: RegisteredClient) -> None: ...

    def close(self) -> None: ...


def openssl_error(error: BaseException) -> str:
    """The OpenSSL-style text of a failed accept, e.g. ``error:14094418:SSL routines:...``."""
    if isinstance(error, ssl.SSLError) and error.reason:
        code, function, text = _OPENSSL_ERRORS.get(
            error.reason, ("140B0000", "SSL_accept", error.reason.lower().replace("_", " "))
        )
        verify = getattr(error, "verify_message", None)
        return f"error:{code}:SSL routines:{function}:{text}" + (f": {verify}" if verify else "")
    if isinstance(error, (ssl.SSLEOFError, ConnectionError, socket.timeout, TimeoutError)):
        return "error:00000000:lib(0):func(0):reason(0): the client closed or timed out during the handshake"
    return f"error:00000000:lib(0):func(0):reason(0): {error}"


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    peer: str
    client: str = UNKNOWN_CLIENT
    thread: threading.Thread | None = field(default=None, repr=False)


class NtlsServer:
    """The NTLS listener of one appliance."""

    def __init__(
        self, core: ApplianceCore, dispatcher_factory: Callable[[ApplianceCore], Dispatcher]
    ) -> None:
        self._core = core
        self._dispatcher_factory = dispatcher_factory
        self._dispatcher: Dispatcher | None = None
        self._listener: socket.socket | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._context_key: tuple | None = None
        self._address = ""
        self._port: int | None = None
        self._pid = os.getpid()
        core.clients.access_reduced.append(self._client_access_reduced)

    # -- status (ntls show) -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def address(self) -> str:
        return self._address

    @property
    def port(self) -> int | None:
        return self._port

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def connected_clients(self) -> list[str]:
        with self._lock:
            return sorted(c.client for c in self._connections)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, address: str, port: int = DEFAULT_PORT) -> int:
        """Listen on (address, port); returns the bound port."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._listener, self._address = listener, address
        self._port = listener.getsockname()[1]
        self._dispatcher = self._dispatcher_factory(self._core)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"ntls-accept-{self._port}", daemon=True
        )
        self._accept_thread.start()
        return self._port

    def stop(self) -> None:
        """Stop listening and end every connection; the port is free afterwards. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            assert self._wake_w is not None
            os.write(self._wake_w, b"x")
            if self._accept_thread is not None:
                self._accept_thread.join(timeout=10)
            listener.close()
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None
        self.end_connections()
        if self._dispatcher is not None:
            self._dispatcher.close()
            self._dispatcher = None
        self._port = None

    def end_connections(self, client: str | None = None) -> None:
        """End the live connections (of one client, or all) and wait for their threads."""
        with self._lock:
            ending = [c for c in self._connections if client is None or c.client.lower() == client.lower()]
        for conn in ending:
            try:
                # The plain socket's shutdown: the TLS object stays intact for the thread
                # using it, whose blocked read now ends.
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
            except OSError:
                pass
        for conn in ending:
            if conn.thread is not None and conn.thread is not threading.current_thread():
                conn.thread.join(timeout=10)

    def reset(self) -> None:
        """After a provider reset: every connection ends and applications start from nothing."""
        self.end_connections()
        if self._dispatcher is not None:
            self._dispatcher.close()
            self._dispatcher = self._dispatcher_factory(self._core)
        self._context = self._context_key = None

    def _client_access_reduced(self, name: str) -> None:
        # A deleted client, or one left without partitions, is no longer trusted: its
        # connections end. A client keeping other partitions stays connected; its calls on
        # a revoked partition fail in the dispatcher.
        if not self._core.clients.assigned_partitions(name):
            threading.Thread(target=self.end_connections, args=(name,), daemon=True).start()

    # -- TLS ----------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        server = self._core.clients.server_certificate()
        trusted = self._core.clients.trusted()
        key = (server.fingerprint, tuple(sorted(c.fingerprint for c in trusted)))
        context = self._context
        if context is not None and key == self._context_key:
            return context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        # A registered certificate is trusted as it is, also when a CA signed it.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self._load_server_certificate(context, server.certificate_pem, server.key_pem)
        if trusted:
            context.load_verify_locations(cadata="".join(c.certificate_pem for c in trusted))
        self._context, self._context_key = context, key
        return context

    def _load_server_certificate(self, context: ssl.SSLContext, certificate_pem: str, key_pem: bytes) -> None:
        # ssl loads keys only from files: a private temporary file in the state directory,
        # removed as soon as it is read.
        state_dir = Path(self._core.state.path).parent
        fd, name = tempfile.mkstemp(prefix=".ntls-", suffix=".pem", dir=state_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key_pem + b"\n" + certificate_pem.encode())
            context.load_cert_chain(name)
        finally:
            os.unlink(name)

    # -- connections --------------------------------------------------------------------

    def _log(self, *lines: str) -> None:
        self._core.log(*(f"NTLS[{self._pid}]: {line}" for line in lines))

    def _accept_loop(self) -> None:
        listener, wake = self._listener, self._wake_r
        assert listener is not None and wake is not None
        while True:
            try:
                ready, _, _ = select.select([listener, wake], [], [])
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            try:
                sock, peer = listener.accept()
            except OSError:
                continue
            conn = _Connection(sock=sock, peer=f"{peer[0]}/{peer[1]}")
            with self._lock:
                if len(self._connections) >= MAX_CONNECTIONS:
                    full = True
                else:
                    full = False
                    self._connections.add(conn)
            if full:
                self._log(f"info : 0 : Incoming connection request... : {conn.peer}",
                          f"info : 0 : Connection limit ({MAX_CONNECTIONS}) reached; "
                          f"connection refused : {conn.peer}")
                sock.close()
                continue
            conn.thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"ntls-{conn.peer}", daemon=True
            )
            conn.thread.start()

    def _serve(self, conn: _Connection) -> None:
        try:
            tls = self._handshake(conn)
            if tls is None:
                return
            dispatcher = self._dispatcher
            try:
                client = self._core.clients.by_certificate(tls.getpeercert(binary_form=True))
            except (OSError, ValueError, AttributeError):  # ended meanwhile (stop, reset)
                client = None
            if dispatcher is None or client is None or not client.partitions:
                self._log(f"info : 0 : NTLS Client \"{conn.client}\" is no longer registered or "
                          f"assigned; connection closed : {conn.peer}")
                tls.close()
                return
            conn.client = client.name
            self._log(f"info : 0 : NTLS Client \"{client.name}\" Connected : {conn.peer}")
            try:
                dispatcher.serve_connection(tls, client=client)
            except Exception:
                log.exception("NTLS connection %s of appliance %s failed", conn.peer, self._core.serial)
            finally:
                try:
                    tls.close()
                except OSError:
                    pass
            self._log(f"info : 0 : NTLS Client \"{client.name}\" Connection instance removed : {conn.peer}")
        finally:
            with self._lock:
                self._connections.discard(conn)

    def _handshake(self, conn: _Connection) -> ssl.SSLSocket | None:
        sock = conn.sock
        self._log(f"info : 0 : Incoming connection request... : {conn.peer}")
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            tls = self._tls_context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls
            tls.do_handshake()
            tls.settimeout(None)
            return tls
        except (ssl.SSLError, OSError) as error:
            self._log(
                f"Error message from SSLAccept is : {openssl_error(error)}",
                "Error during SSL accept ( RC_SSL_ERROR )",
                f"info : 0xc0000711 : Fail to establish a secure channel with client : {conn.peer} : "
                "RC_SSL_FAILED_HANDSHAKE",
                f"info : 0 : NTLS Client \"{UNKNOWN_CLIENT}\" Connection instance removed : {conn.peer}",
            )
            self._close_after_failure(conn.sock)
            return None

    @staticmethod
    def _close_after_failure(sock: socket.socket) -> None:
        """Close so that the client reads the TLS alert: closing with unread input would reset
        the connection and lose it (TLS 1.3 clients send data before they learn the outcome)."""
        try:
            socket.socket.shutdown(sock, socket.SHUT_WR)
            sock.settimeout(2)
            drained = 0
            while drained < 65536:
                data = socket.socket.recv(sock, 4096)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
