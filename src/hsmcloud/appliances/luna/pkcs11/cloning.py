"""The cloning opcodes (0x0070–0x0076) over a session: who may, then the core's cloning service.

Every call but GET_CLONING_INFO needs the application logged in to the session's partition
as the Crypto Officer; the calls that store objects (CLONE_IMPORT, RESTORE) need a
read/write session. docs/ntls-protocol.md, "Cloning, backup and synchronize".
"""

from __future__ import annotations

from hsmcloud.protocols.ntls.messages import CloningInfo, ObjectFingerprint
from hsmcloud.protocols.pkcs11 import constants as c

from .errors import SessionReadOnly, UserNotLoggedIn
from .sessions import Application, Session
from .token import Pkcs11Service


class CloningCalls:
    def __init__(self, service: Pkcs11Service) -> None:
        self._service = service
        self._cloning = service.core.cloning

    def _officer_session(self, app: Application, handle: int, *, write: bool = False) -> Session:
        session = self._service._session(app, handle)
        login = app.logins.get(session.serial)
        if login is None or login.user_type != c.CKU_USER:
            raise UserNotLoggedIn("Cloning, backup and restore need the Crypto Officer logged in.")
        if write and not session.rw:
            raise SessionReadOnly("Storing cloned or restored objects needs a read/write session.")
        return session

    def get_cloning_info(self, app: Application, serial: str) -> tuple:
        self._service._partition(app, serial)
        info = self._cloning.info(serial)
        return (CloningInfo(info.initialized, info.domain_id, info.hsm_allow_cloning,
                            info.hsm_network_replication, info.hsm_allow_non_fips,
                            info.private_key_cloning, info.secret_key_cloning),)

    def clone_offer(self, app: Application, handle: int) -> tuple:
        session = self._officer_session(app, handle, write=True)
        return (self._cloning.offer(session.serial, session.generation),)

    def clone_export(self, app: Application, handle: int, offer: bytes, objects: list) -> tuple:
        session = self._officer_session(app, handle)
        return (self._cloning.export(session.serial, session.generation, offer, objects),)

    def clone_import(self, app: Application, handle: int, blob: bytes) -> tuple:
        session = self._officer_session(app, handle, write=True)
        return (self._cloning.import_blob(session.serial, session.generation, blob),)

    def list_object_fingerprints(self, app: Application, handle: int) -> tuple:
        session = self._officer_session(app, handle)
        return ([ObjectFingerprint(f.handle, f.cls, f.fingerprint)
                 for f in self._cloning.fingerprints(session.serial, session.generation)],)

    def backup(self, app: Application, handle: int) -> tuple:
        session = self._officer_session(app, handle)
        return (self._cloning.backup(session.serial, session.generation),)

    def restore(self, app: Application, handle: int, data: bytes, replace: bool) -> tuple:
        session = self._officer_session(app, handle, write=True)
        return self._cloning.restore(session.serial, session.generation, data, replace=replace)
