"""Application contexts: one per (client certificate, application id), shared by its connections.

A PKCS#11 library draws a new application id at every ``C_Initialize``; every connection it
opens to this appliance says so in ``HELLO``. The context (sessions, logins, session objects)
lives while at least one of its connections is open and is destroyed with the last one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hsmcloud.protocols.ntls.wire import ProtocolError
from hsmcloud.protocols.pkcs11.attributes import NativeLayout

from ..pkcs11.sessions import Application


@dataclass
class _Entry:
    application: Application
    connections: int


class ApplicationRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], _Entry] = {}

    def attach(self, *, client_name: str, fingerprint: str, application_id: int,
               layout: NativeLayout) -> Application:
        """The application's context for one more connection (created on its first)."""
        key = (fingerprint, application_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(Application(client_name=client_name, application_id=application_id,
                                           layout=layout), 0)
                self._entries[key] = entry
            elif entry.application.layout != layout:
                raise ProtocolError("another connection of this application declared a different "
                                    "CK_ULONG layout")
            entry.connections += 1
            return entry.application

    def detach(self, application: Application, fingerprint: str) -> None:
        """One connection of the application closed; the last one ends its sessions and logins."""
        key = (fingerprint, application.application_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.application is not application:
                return
            entry.connections -= 1
            if entry.connections > 0:
                return
            del self._entries[key]
        application.close_all()

    def applications(self) -> list[Application]:
        with self._lock:
            return [entry.application for entry in self._entries.values()]

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.application.close_all()
