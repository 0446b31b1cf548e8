"""Applications, their sessions and logins, as PKCS#11 defines them.

An application (one ``C_Initialize`` of one process, over any number of connections) has
sessions on partitions; a login is the application's, per partition: it applies to every
session the application has there and ends when its last session there closes. Session
objects belong to the application and go with the session that created them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import NativeLayout

from ..core.partitions import Grant
from ..core.roles import Role
from .errors import DeviceMemory, OperationActive, OperationNotInitialized, SessionCount
from .objects import P11Object

#: Session objects get handles from here up, token objects (keystore handles) stay below.
SESSION_OBJECT_BASE = 0x80000000
MAX_SESSIONS_PER_APPLICATION = 4096
MAX_SESSION_OBJECTS_PER_APPLICATION = 100_000

#: The PKCS#11 user types and the partition roles they log in as.
USER_ROLES = {
    c.CKU_SO: Role.PARTITION_SO,
    c.CKU_USER: Role.CRYPTO_OFFICER,
    c.CKU_CRYPTO_USER: Role.CRYPTO_USER,
}

#: Kinds of cryptographic operation; a session has at most one active of each.
ENCRYPT, DECRYPT, DIGEST, SIGN, VERIFY = "encrypt", "decrypt", "digest", "sign", "verify"


@dataclass(slots=True)
class Login:
    user_type: int
    grant: Grant

    @property
    def uses_keys(self) -> bool:
        """The Crypto Officer and the Crypto User see private objects and use keys."""
        return self.user_type in (c.CKU_USER, c.CKU_CRYPTO_USER)


@dataclass(slots=True)
class ActiveOperation:
    operation: Any
    key: P11Object | None
    mechanism: int
    #: A result computed for a size query or a too-small buffer, returned by the next call.
    pending: bytes | None = None
    #: True once C_*Update ran: the one-shot C_Encrypt/C_Sign/... no longer applies.
    multi_part: bool = False
    #: The key is CKA_ALWAYS_AUTHENTICATE and C_Login(CKU_CONTEXT_SPECIFIC) has not come yet.
    needs_login: bool = False


@dataclass(slots=True)
class FindState:
    handles: list[int]
    position: int = 0


@dataclass(eq=False)
class Session:
    handle: int
    serial: str
    rw: bool
    generation: int
    operations: dict[str, ActiveOperation] = field(default_factory=dict)
    find: FindState | None = None
    #: C_WrapKey's result kept after a size query: (what was asked, wrapped bytes).
    pending_wrap: tuple | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, kind: str, active: ActiveOperation) -> None:
        if kind in self.operations:
            raise OperationActive()
        self.operations[kind] = active

    def active(self, kind: str) -> ActiveOperation:
        active = self.operations.get(kind)
        if active is None:
            raise OperationNotInitialized()
        return active

    def end(self, kind: str) -> None:
        self.operations.pop(kind, None)


class Application:
    """One application's PKCS#11 state on this appliance."""

    def __init__(self, *, client_name: str, application_id: int, layout: NativeLayout) -> None:
        self.client_name = client_name
        self.application_id = application_id
        self.layout = layout
        self.lock = threading.RLock()
        self.sessions: dict[int, Session] = {}
        self.logins: dict[str, Login] = {}
        self.session_objects: dict[int, tuple[str, P11Object]] = {}
        self._next_session = 1
        self._next_object = SESSION_OBJECT_BASE

    # -- sessions -----------------------------------------------------------------------

    def open_session(self, serial: str, *, rw: bool, generation: int) -> Session:
        with self.lock:
            if len(self.sessions) >= MAX_SESSIONS_PER_APPLICATION:
                raise SessionCount(f"An application may have {MAX_SESSIONS_PER_APPLICATION} "
                                   "sessions open.")
            handle = self._next_session
            while handle in self.sessions or handle == 0:
                handle = (handle % self.layout.max_ulong) + 1
            self._next_session = handle + 1
            session = Session(handle=handle, serial=serial, rw=rw, generation=generation)
            self.sessions[handle] = session
            return session

    def sessions_on(self, serial: str) -> list[Session]:
        with self.lock:
            return [s for s in self.sessions.values() if s.serial == serial]

    def close_session(self, session: Session) -> None:
        """Close one session: its session objects go; the last one on a partition logs out."""
        with self.lock:
            if self.sessions.pop(session.handle, None) is None:
                return
            for handle in [h for h, (_, obj) in self.session_objects.items()
                           if obj.session == session.handle]:
                del self.session_objects[handle]
            if not any(s.serial == session.serial for s in self.sessions.values()):
                self.logins.pop(session.serial, None)
        session.operations.clear()
        session.find = None

    def close_partition(self, serial: str) -> None:
        for session in self.sessions_on(serial):
            self.close_session(session)
        with self.lock:
            self.logins.pop(serial, None)

    def close_all(self) -> None:
        with self.lock:
            serials = {s.serial for s in self.sessions.values()}
        for serial in serials:
            self.close_partition(serial)
        with self.lock:
            self.logins.clear()
            self.session_objects.clear()

    # -- session objects --------------------------------------------------------------------

    def add_session_object(self, serial: str, session: Session, obj: P11Object) -> P11Object:
        with self.lock:
            if len(self.session_objects) >= MAX_SESSION_OBJECTS_PER_APPLICATION:
                raise DeviceMemory("The application has too many session objects.")
            handle = self._next_object
            while handle in self.session_objects:
                handle = handle + 1 if handle < self.layout.max_ulong else SESSION_OBJECT_BASE
            self._next_object = handle + 1 if handle < self.layout.max_ulong else SESSION_OBJECT_BASE
            obj.handle = handle
            obj.session = session.handle
            self.session_objects[handle] = (serial, obj)
            return obj

    def session_objects_on(self, serial: str) -> list[P11Object]:
        with self.lock:
            return [obj for s, obj in self.session_objects.values() if s == serial]

    def session_state(self, session: Session) -> int:
        login = self.logins.get(session.serial)
        if login is None:
            return c.CKS_RW_PUBLIC_SESSION if session.rw else c.CKS_RO_PUBLIC_SESSION
        if login.user_type == c.CKU_SO:
            return c.CKS_RW_SO_FUNCTIONS
        return c.CKS_RW_USER_FUNCTIONS if session.rw else c.CKS_RO_USER_FUNCTIONS
