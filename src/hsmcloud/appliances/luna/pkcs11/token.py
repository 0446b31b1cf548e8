"""The C_* functions of a partition's token, over the appliance core.

One :class:`Pkcs11Service` per running appliance. Each method is one PKCS#11 function as the
NTLS opcode table carries it: it takes the calling :class:`~.sessions.Application` and the
request's fields, and returns the response's fields (or raises a :class:`~.errors.CkError`,
or a core error that ``errors.rv_of`` maps to its CKR code).

Hot path (C_SignInit/C_Sign with a token key): session dict lookup, the partition's in-memory
status and the client's in-memory assignments, the keystore's in-memory record, and a cached
`cryptography` key object. No SQLite read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from hsmcloud.protocols.ntls.messages import (
    AttributeResult,
    GetRequest,
    OutBuf,
    Output,
    PartitionEntry,
    encode_attribute_array,
)
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import ATTRIBUTE_KINDS, Kind
from hsmcloud.protocols.pkcs11.params import Mechanism

from ..core import errors as core_errors
from ..core.appliance_core import ApplianceCore
from ..core.keystore import ObjectRecord
from ..core.partitions import Grant, PartitionStatus
from ..core.policies import (
    PARTITION_PRIVATE_KEY_WRAPPING,
    PARTITION_SECRET_KEY_WRAPPING,
)
from ..core.product import FIRMWARE_VERSION, HSM_MODEL, PRODUCT_NAME
from ..core.roles import Role
from . import keys
from . import objects as obj_rules
from .errors import (
    ActionProhibited,
    AttributeReadOnly,
    ArgumentsBad,
    AttributeSensitive,
    AttributeTypeInvalid,
    BufferTooSmall,
    CkError,
    KeyFunctionNotPermitted,
    KeyHandleInvalid,
    KeyIndigestible,
    KeyNotWrappable,
    KeySizeRange,
    KeyTypeInconsistent,
    KeyUnextractable,
    MechanismInvalid,
    MechanismParamInvalid,
    ObjectHandleInvalid,
    OperationActive,
    OperationNotInitialized,
    PinExpired,
    PinInvalid,
    PinLocked,
    RandomSeedNotSupported,
    SessionExists,
    SessionHandleInvalid,
    SessionParallelNotSupported,
    SessionReadOnly,
    SessionReadOnlyExists,
    SessionReadWriteSoExists,
    SlotIdInvalid,
    TemplateIncomplete,
    TemplateInconsistent,
    TokenNotRecognized,
    UnwrappingKeyHandleInvalid,
    UnwrappingKeyTypeInconsistent,
    UserAlreadyLoggedIn,
    UserAnotherAlreadyLoggedIn,
    UserNotLoggedIn,
    UserTypeInvalid,
    WrappingKeyHandleInvalid,
    WrappingKeyTypeInconsistent,

)
from .mechanisms import registry
from .mechanisms.base import MechanismSpec
from .objects import Creation, P11Object
from .sessions import (
    DECRYPT,
    DIGEST,
    ENCRYPT,
    SESSION_OBJECT_BASE,
    SIGN,
    USER_ROLES,
    VERIFY,
    ActiveOperation,
    Application,
    FindState,
    Login,
    Session,
)

MANUFACTURER = "hsmcloud (Luna emulation)"
#: A C_*Init whose pMechanism is NULL (PKCS#11 3.0: end the active operation) carries this type.
CANCEL_MECHANISM = c.CK_UNAVAILABLE_INFORMATION
MAX_RANDOM = 1024 * 1024
#: The appliance's random number generator is the operating system's. Data written to this
#: device is mixed into its pool without being credited as entropy (Linux random(4)), so seed
#: material can only add unpredictability, never take it away.
RANDOM_POOL = "/dev/urandom"
_HW_VERSION = (7, 0)
_FW_VERSION = tuple(int(part) for part in FIRMWARE_VERSION.split(".")[:2])


def _padded(text: str, size: int) -> bytes:
    raw = text.encode("utf-8")[:size]
    return raw + b" " * (size - len(raw))


def _pin(pin: bytes | None) -> str:
    if pin is None:
        raise ArgumentsBad("A PIN is needed (this token has no protected authentication path).")
    try:
        return bytes(pin).decode("utf-8")
    except UnicodeDecodeError:
        raise PinInvalid("The PIN is not UTF-8 text.") from None


# -- stored ⇄ in-memory attribute values -----------------------------------------------------------


def _from_store(value):
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Mapping):
        return tuple((int(k), _from_store(v)) for k, v in value.items())
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _to_store(type_: int, value):
    if ATTRIBUTE_KINDS.get(type_) is Kind.TEMPLATE:
        return {k: _to_store(k, v) for k, v in value}
    if isinstance(value, tuple):
        return list(value)
    return value


def _store_form(attrs: dict[int, Any]) -> dict[int, Any]:
    return {k: _to_store(k, v) for k, v in attrs.items()}


class TokenObjects:
    """P11Objects for the keystore's records, cached while the record is the same."""

    def __init__(self, core: ApplianceCore) -> None:
        self._keystore = core.keystore
        self._cache: dict[tuple[str, int], tuple[ObjectRecord, P11Object]] = {}
        self._lock = threading.Lock()

    def _wrap(self, serial: str, record: ObjectRecord) -> P11Object:
        cached = self._cache.get((serial, record.handle))
        if cached is not None and cached[0] is record:
            return cached[1]
        obj = P11Object(handle=record.handle,
                        attrs={k: _from_store(v) for k, v in record.attributes.items()},
                        secret=record.secret, version=record.version)
        with self._lock:
            self._cache[(serial, record.handle)] = (record, obj)
        return obj

    def get(self, serial: str, handle: int) -> P11Object | None:
        try:
            record = self._keystore.get(serial, handle)
        except core_errors.ObjectNotFound:
            return None
        return self._wrap(serial, record)

    def all(self, serial: str) -> list[P11Object]:
        return [self._wrap(serial, record) for record in self._keystore.objects(serial)]

    def create(self, serial: str, generation: int, attrs: dict, secret: bytes | None) -> P11Object:
        record = self._keystore.create(serial, generation=generation,
                                       attributes=_store_form(attrs), secret=secret)
        return self._wrap(serial, record)

    def update(self, serial: str, obj: P11Object, attrs: dict) -> P11Object:
        record = self._keystore.update(serial, obj.handle, _store_form(attrs),
                                       expected_version=obj.version)
        return self._wrap(serial, record)

    def destroy(self, serial: str, handle: int) -> None:
        self._keystore.destroy(serial, handle)
        with self._lock:
            self._cache.pop((serial, handle), None)


class Pkcs11Service:
    """The PKCS#11 semantics of every partition of one appliance."""

    def __init__(self, core: ApplianceCore) -> None:
        self.core = core
        self.objects = TokenObjects(core)

    # -- lookups --------------------------------------------------------------------------------

    def _mechanisms(self) -> dict[int, MechanismSpec]:
        return registry(fips=self.core.hsm.fips_mode)

    def _partition(self, app: Application, serial: str) -> PartitionStatus:
        if serial not in self.core.clients.assigned_partitions(app.client_name):
            raise SlotIdInvalid(f"Partition {serial} is not assigned to this client.")
        status = self.core.partitions.find(serial)
        if status is None:
            raise SlotIdInvalid(f"There is no partition {serial}.")
        return status

    def _session(self, app: Application, handle: int, *, allow_expired: bool = False) -> Session:
        session = app.sessions.get(handle)
        if session is None:
            raise SessionHandleInvalid()
        serial = session.serial
        status = self.core.partitions.find(serial)
        if status is None or status.generation != session.generation or not status.initialized:
            app.close_partition(serial)
            raise SessionHandleInvalid("The partition was zeroized or re-initialized.")
        if serial not in self.core.clients.assigned_partitions(app.client_name):
            app.close_partition(serial)
            raise SlotIdInvalid(f"Partition {serial} is no longer assigned to this client.")
        login = app.logins.get(serial)
        if login is not None:
            if status.roles[login.grant.role].locked:
                app.logins.pop(serial, None)
                raise PinLocked("The role was locked out; log in again after it is reset.")
            if login.grant.must_change and not allow_expired:
                raise PinExpired("The PIN was set by someone else and must be changed first "
                                 "(C_SetPIN).")
        return session

    def _visible(self, app: Application, session: Session, obj: P11Object) -> bool:
        if obj.private:
            login = app.logins.get(session.serial)
            return login is not None and login.uses_keys
        return True

    def _object(self, app: Application, session: Session, handle: int,
                error: type[CkError] = ObjectHandleInvalid) -> P11Object:
        if handle >= SESSION_OBJECT_BASE:
            entry = app.session_objects.get(handle)
            obj = entry[1] if entry is not None and entry[0] == session.serial else None
        else:
            obj = self.objects.get(session.serial, handle) if handle else None
        if obj is None or not self._visible(app, session, obj):
            raise error()
        return obj

    def _can_write(self, app: Application, session: Session, *, token: bool,
                   private: bool) -> None:
        """May this session create, change or destroy an object with these flags?"""
        if token and not session.rw:
            raise SessionReadOnly("Token objects need a read/write session.")
        if private:
            login = app.logins.get(session.serial)
            if login is None or login.user_type != c.CKU_USER:
                raise UserNotLoggedIn(
                    "Private objects need the Crypto Officer's login (the Crypto User may "
                    "create public objects only).")

    def _store(self, app: Application, session: Session, attrs: dict,
               secret: bytes | None) -> P11Object:
        if attrs.get(c.CKA_TOKEN):
            return self.objects.create(session.serial, session.generation, attrs, secret)
        obj = P11Object(handle=0, attrs=attrs, secret=secret)
        return app.add_session_object(session.serial, session, obj)

    # -- slots and tokens -------------------------------------------------------------------------

    def list_partitions(self, app: Application) -> tuple:
        assigned = self.core.clients.assigned_partitions(app.client_name)
        entries = [PartitionEntry(p.serial, p.name, p.initialized, p.label or "")
                   for p in self.core.partitions.list() if p.serial in assigned]
        return (entries,)

    def get_slot_info(self, app: Application, serial: str) -> tuple:
        status = self._partition(app, serial)
        return (f"{PRODUCT_NAME} partition {status.name}", MANUFACTURER,
                c.CKF_TOKEN_PRESENT | c.CKF_HW_SLOT, *_HW_VERSION, *_FW_VERSION)

    def get_token_info(self, app: Application, serial: str) -> tuple:
        status = self._partition(app, serial)
        flags = c.CKF_RNG | c.CKF_LOGIN_REQUIRED | c.CKF_RESTORE_KEY_NOT_NEEDED | \
            c.CKF_CLOCK_ON_TOKEN
        if status.initialized:
            flags |= c.CKF_TOKEN_INITIALIZED
            co = status.roles[Role.CRYPTO_OFFICER]
            po = status.roles[Role.PARTITION_SO]
            if co.initialized:
                flags |= c.CKF_USER_PIN_INITIALIZED
            if co.locked:
                flags |= c.CKF_USER_PIN_LOCKED
            elif co.failed_logins:
                flags |= c.CKF_USER_PIN_COUNT_LOW
                if status.threshold(Role.CRYPTO_OFFICER) - co.failed_logins == 1:
                    flags |= c.CKF_USER_PIN_FINAL_TRY
            if co.must_change:
                flags |= c.CKF_USER_PIN_TO_BE_CHANGED
            if po.failed_logins:
                flags |= c.CKF_SO_PIN_COUNT_LOW
                if status.threshold(Role.PARTITION_SO) - po.failed_logins == 1:
                    flags |= c.CKF_SO_PIN_FINAL_TRY
            if po.must_change:
                flags |= c.CKF_SO_PIN_TO_BE_CHANGED
        sessions = app.sessions_on(serial)
        rw = sum(1 for s in sessions if s.rw)
        unavailable = c.CK_UNAVAILABLE_INFORMATION
        utc = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.core.clock().timestamp())) + "00"
        return (_padded(status.label or "", 32), _padded(MANUFACTURER, 32),
                _padded(HSM_MODEL, 16), _padded(serial, 16), flags,
                c.CK_EFFECTIVELY_INFINITE, len(sessions), c.CK_EFFECTIVELY_INFINITE, rw,
                status.policies.get(26, 255), status.policies.get(25, 8),
                unavailable, unavailable, unavailable, unavailable,
                *_HW_VERSION, *_FW_VERSION, utc.encode("ascii"))

    def get_mechanism_list(self, app: Application, serial: str) -> tuple:
        self._partition(app, serial)
        return (sorted(self._mechanisms()),)

    def get_mechanism_info(self, app: Application, serial: str, mechanism: int) -> tuple:
        self._partition(app, serial)
        spec = self._mechanisms().get(mechanism)
        if spec is None:
            raise MechanismInvalid()
        return (spec.min_key, spec.max_key, spec.flags)

    def init_token(self, app: Application, serial: str, so_pin: bytes | None,
                   label: bytes) -> tuple:
        self._partition(app, serial)
        if app.sessions_on(serial):
            raise SessionExists("Close the application's sessions on the token first.")
        text = bytes(label).rstrip(b" \x00").decode("utf-8", "replace")
        self.core.partitions.init(serial, so_pin=_pin(so_pin), label=text)
        return ()

    # -- sessions ---------------------------------------------------------------------------------

    def open_session(self, app: Application, serial: str, flags: int) -> tuple:
        if not flags & c.CKF_SERIAL_SESSION:
            raise SessionParallelNotSupported()
        status = self._partition(app, serial)
        if not status.initialized:
            raise TokenNotRecognized(f"Partition {serial} is not initialized.")
        rw = bool(flags & c.CKF_RW_SESSION)
        login = app.logins.get(serial)
        if not rw and login is not None and login.user_type == c.CKU_SO:
            raise SessionReadWriteSoExists()
        session = app.open_session(serial, rw=rw, generation=status.generation)
        return (session.handle,)

    def close_session(self, app: Application, handle: int) -> tuple:
        session = app.sessions.get(handle)
        if session is None:
            raise SessionHandleInvalid()
        app.close_session(session)
        return ()

    def close_all_sessions(self, app: Application, serial: str) -> tuple:
        self._partition(app, serial)
        app.close_partition(serial)
        return ()

    def get_session_info(self, app: Application, handle: int) -> tuple:
        session = self._session(app, handle, allow_expired=True)
        flags = c.CKF_SERIAL_SESSION | (c.CKF_RW_SESSION if session.rw else 0)
        return (app.session_state(session), flags, 0)

    def login(self, app: Application, handle: int, user_type: int, pin: bytes | None) -> tuple:
        session = self._session(app, handle, allow_expired=True)
        if user_type == c.CKU_CONTEXT_SPECIFIC:
            return self._context_login(app, session, pin)
        role = USER_ROLES.get(user_type)
        if role is None:
            raise UserTypeInvalid()
        current = app.logins.get(session.serial)
        if current is not None:
            if current.user_type == user_type:
                raise UserAlreadyLoggedIn()
            raise UserAnotherAlreadyLoggedIn()
        if user_type == c.CKU_SO and any(not s.rw for s in app.sessions_on(session.serial)):
            raise SessionReadOnlyExists()
        text = _pin(pin)
        try:
            grant = self.core.partitions.login(session.serial, role, text)
        except core_errors.PartitionZeroizedByFailedLogins:
            app.close_partition(session.serial)
            raise
        with app.lock:
            if session.serial in app.logins:
                raise UserAnotherAlreadyLoggedIn()
            app.logins[session.serial] = Login(user_type, grant)
        return ()

    def _context_login(self, app: Application, session: Session, pin: bytes | None) -> tuple:
        """CKU_CONTEXT_SPECIFIC: the logged-in user gives the PIN again for the key of the
        session's active operation (CKA_ALWAYS_AUTHENTICATE)."""
        login = app.logins.get(session.serial)
        if login is None or not login.uses_keys:
            raise UserNotLoggedIn("A context-specific login needs the CO or CU logged in.")
        waiting = [a for a in session.operations.values() if a.needs_login]
        if not waiting:
            raise OperationNotInitialized("No active operation needs a context-specific login.")
        self.core.partitions.login(session.serial, login.grant.role, _pin(pin))
        for active in waiting:
            active.needs_login = False
        return ()

    def logout(self, app: Application, handle: int) -> tuple:
        session = self._session(app, handle, allow_expired=True)
        with app.lock:
            if app.logins.pop(session.serial, None) is None:
                raise UserNotLoggedIn()
        for s in app.sessions_on(session.serial):
            s.find = None
        return ()

    def init_pin(self, app: Application, handle: int, pin: bytes | None) -> tuple:
        session = self._session(app, handle)
        login = app.logins.get(session.serial)
        if login is None or login.user_type != c.CKU_SO:
            raise UserNotLoggedIn("C_InitPIN needs the Partition SO's login.")
        if not session.rw:
            raise SessionReadOnly()
        text = _pin(pin)
        status = self.core.partitions.check(login.grant)
        if status.roles[Role.CRYPTO_OFFICER].initialized:
            self.core.partitions.reset_role(session.serial, Role.CRYPTO_OFFICER, text,
                                            by=login.grant)
        else:
            self.core.partitions.init_role(session.serial, Role.CRYPTO_OFFICER, text,
                                           by=login.grant)
        return ()

    def set_pin(self, app: Application, handle: int, old: bytes | None,
                new: bytes | None) -> tuple:
        session = self._session(app, handle, allow_expired=True)
        if not session.rw:
            raise SessionReadOnly("C_SetPIN needs a read/write session.")
        login = app.logins.get(session.serial)
        user_type = login.user_type if login is not None else c.CKU_USER
        role = USER_ROLES[user_type]
        self.core.partitions.change_pin(session.serial, role, _pin(old), _pin(new))
        if login is not None:
            with app.lock:
                app.logins[session.serial] = Login(user_type, Grant(
                    serial=login.grant.serial, role=login.grant.role,
                    generation=login.grant.generation, must_change=False))
        return ()

    # -- objects ----------------------------------------------------------------------------------

    def create_object(self, app: Application, handle: int, template: list) -> tuple:
        session = self._session(app, handle)
        t = obj_rules.template_dict(template)
        attrs, shape = obj_rules.new_attributes(t, how=Creation.CREATE)
        self._can_write(app, session, token=attrs[c.CKA_TOKEN], private=attrs[c.CKA_PRIVATE])
        login = app.logins.get(session.serial)
        if attrs.get(c.CKA_TRUSTED) and (login is None or login.user_type != c.CKU_SO):
            raise AttributeReadOnly("Only the Partition SO may set CKA_TRUSTED.")
        secret = _import_material(attrs, t)
        obj = self._store(app, session, attrs, secret)
        return (obj.handle,)

    def copy_object(self, app: Application, handle: int, source: int, template: list) -> tuple:
        session = self._session(app, handle)
        original = self._object(app, session, source)
        if not original.flag(c.CKA_COPYABLE):
            raise ActionProhibited("The object is not copyable (CKA_COPYABLE false).")
        changes = obj_rules.template_dict(template)
        login = app.logins.get(session.serial)
        obj_rules.check_change(original, changes, copying=True,
                               so=login is not None and login.user_type == c.CKU_SO)
        attrs = dict(original.attrs)
        attrs.update(changes)
        attrs[c.CKA_UNIQUE_ID] = os.urandom(16).hex().encode("ascii")
        self._can_write(app, session, token=bool(attrs.get(c.CKA_TOKEN)),
                        private=bool(attrs.get(c.CKA_PRIVATE)))
        obj = self._store(app, session, attrs, original.secret)
        return (obj.handle,)

    def destroy_object(self, app: Application, handle: int, target: int) -> tuple:
        session = self._session(app, handle)
        obj = self._object(app, session, target)
        self._can_write(app, session, token=obj.token, private=obj.private)
        if not obj.flag(c.CKA_DESTROYABLE):
            raise ActionProhibited("The object is not destroyable (CKA_DESTROYABLE false).")
        if obj.handle >= SESSION_OBJECT_BASE:
            with app.lock:
                app.session_objects.pop(obj.handle, None)
        else:
            self.objects.destroy(session.serial, obj.handle)
        return ()

    def get_object_size(self, app: Application, handle: int, target: int) -> tuple:
        session = self._session(app, handle)
        return (self._object(app, session, target).size(),)

    def get_attribute_value(self, app: Application, handle: int, target: int,
                            requests: list[GetRequest]) -> tuple:
        session = self._session(app, handle)
        obj = self._object(app, session, target)
        layout = app.layout
        shape = obj.shape
        results: list[AttributeResult] = []
        failure: type[CkError] | None = None
        for type_, has_buffer, length in requests:
            raw, problem = self._attribute_bytes(obj, shape, type_, layout)
            if problem is not None:
                results.append(AttributeResult(c.CK_UNAVAILABLE_INFORMATION, None))
                failure = failure or problem
            elif not has_buffer:
                results.append(AttributeResult(len(raw), None))
            elif length >= len(raw):
                results.append(AttributeResult(len(raw), raw))
            else:
                results.append(AttributeResult(c.CK_UNAVAILABLE_INFORMATION, None))
                failure = failure or BufferTooSmall
        if failure is not None:
            error = failure()
            error.fields = (results,)
            raise error
        return (results,)

    @staticmethod
    def _attribute_bytes(obj: P11Object, shape, type_: int, layout):
        if type_ not in shape.valid:
            return None, AttributeTypeInvalid
        if type_ in shape.sensitive:
            if not obj_rules.value_readable(obj):
                return None, AttributeSensitive
            return obj_rules.sensitive_value(obj, type_), None
        kind = ATTRIBUTE_KINDS[type_]
        value = obj.attrs.get(type_)
        if kind is Kind.TEMPLATE:
            # the nested template; the library lays it out as CK_ATTRIBUTEs (two-call protocol)
            return encode_attribute_array(value or (), layout), None
        if value is None:
            if kind in (Kind.ULONG, Kind.BOOL):
                return None, AttributeTypeInvalid
            value = () if kind is Kind.MECHANISMS else b""
        return layout.encode_value(type_, value), None

    def set_attribute_value(self, app: Application, handle: int, target: int,
                            template: list) -> tuple:
        session = self._session(app, handle)
        obj = self._object(app, session, target)
        self._can_write(app, session, token=obj.token, private=obj.private)
        changes = obj_rules.template_dict(template)
        login = app.logins.get(session.serial)
        obj_rules.check_change(obj, changes, copying=False,
                               so=login is not None and login.user_type == c.CKU_SO)
        attrs = dict(obj.attrs)
        attrs.update(changes)
        if obj.handle >= SESSION_OBJECT_BASE:
            with obj._lock:
                obj.attrs = attrs
        else:
            self.objects.update(session.serial, obj, attrs)
        return ()

    def find_objects_init(self, app: Application, handle: int, template: list) -> tuple:
        session = self._session(app, handle)
        if session.find is not None:
            raise OperationActive("A search is already active in this session.")
        t = obj_rules.template_dict(template)
        for type_ in t:
            if type_ not in ATTRIBUTE_KINDS:
                raise AttributeTypeInvalid(f"{c.attribute_name(type_)} is not an attribute.")
        candidates = [*self.objects.all(session.serial), *app.session_objects_on(session.serial)]
        found = [o.handle for o in candidates
                 if self._visible(app, session, o) and obj_rules.matches(o, t)]
        session.find = FindState(found)
        return ()

    def find_objects(self, app: Application, handle: int, max_count: int) -> tuple:
        session = self._session(app, handle)
        state = session.find
        if state is None:
            raise OperationNotInitialized("C_FindObjectsInit first.")
        chunk = state.handles[state.position: state.position + max(0, min(max_count, 1 << 20))]
        state.position += len(chunk)
        return (chunk,)

    def find_objects_final(self, app: Application, handle: int) -> tuple:
        session = self._session(app, handle)
        if session.find is None:
            raise OperationNotInitialized()
        session.find = None
        return ()

    # -- cryptographic operations ----------------------------------------------------------------

    def _start(self, app: Application, handle: int, kind: str, mechanism: Mechanism,
               key_handle: int, usage: int) -> tuple:
        session = self._session(app, handle)
        if mechanism.type == CANCEL_MECHANISM:
            session.end(kind)  # PKCS#11 3.0: C_*Init with a NULL mechanism ends the operation
            return ()
        if kind in session.operations:
            raise OperationActive()
        key = self._object(app, session, key_handle, KeyHandleInvalid)
        spec = self._mechanisms().get(mechanism.type)
        factory = getattr(spec, kind) if spec is not None else None
        if factory is None:
            raise MechanismInvalid(f"{c.mechanism_name(mechanism.type)} cannot {kind}.")
        _check_key(key, spec, mechanism.type, usage)
        active = ActiveOperation(factory(key, mechanism, app.layout), key, mechanism.type)
        # CKA_ALWAYS_AUTHENTICATE: each signature or decryption needs the PIN again
        active.needs_login = kind in (SIGN, DECRYPT) and key.flag(c.CKA_ALWAYS_AUTHENTICATE)
        session.start(kind, active)
        return ()

    def encrypt_init(self, app, handle, mechanism, key):
        return self._start(app, handle, ENCRYPT, mechanism, key, c.CKA_ENCRYPT)

    def decrypt_init(self, app, handle, mechanism, key):
        return self._start(app, handle, DECRYPT, mechanism, key, c.CKA_DECRYPT)

    def sign_init(self, app, handle, mechanism, key):
        return self._start(app, handle, SIGN, mechanism, key, c.CKA_SIGN)

    def verify_init(self, app, handle, mechanism, key):
        return self._start(app, handle, VERIFY, mechanism, key, c.CKA_VERIFY)

    def digest_init(self, app: Application, handle: int, mechanism: Mechanism) -> tuple:
        session = self._session(app, handle)
        if mechanism.type == CANCEL_MECHANISM:
            session.end(DIGEST)
            return ()
        spec = self._mechanisms().get(mechanism.type)
        if spec is None or spec.digest is None:
            raise MechanismInvalid(f"{c.mechanism_name(mechanism.type)} is not a digest.")
        session.start(DIGEST, ActiveOperation(spec.digest(mechanism, app.layout), None,
                                              mechanism.type))
        return ()

    @staticmethod
    def _produce(session: Session, kind: str, step: str, outbuf: OutBuf, compute,
                 *, ends: bool) -> tuple:
        """Run one output-producing step with PKCS#11's buffer rules: a size query or a too-small
        buffer keeps the operation and the computed result for the next call."""
        active = session.active(kind)
        if active.needs_login:
            session.end(kind)
            raise UserNotLoggedIn("The key needs the PIN again (C_Login with CKU_CONTEXT_SPECIFIC).")
        pending = active.pending
        if pending is not None and pending[0] == step:
            result = pending[1]
        else:
            try:
                result = compute(active)
            except BaseException:
                session.end(kind)
                raise
        if not outbuf.has_buffer:
            active.pending = (step, result)
            return (Output(None, len(result)),)
        if outbuf.capacity < len(result):
            active.pending = (step, result)
            error = BufferTooSmall()
            error.fields = (len(result),)
            raise error
        active.pending = None
        if ends:
            session.end(kind)
        return (Output(result, len(result)),)

    def _consume(self, session: Session, kind: str, fn) -> tuple:
        active = session.active(kind)
        if active.needs_login:
            session.end(kind)
            raise UserNotLoggedIn("The key needs the PIN again (C_Login with CKU_CONTEXT_SPECIFIC).")
        try:
            fn(active)
        except BaseException:
            session.end(kind)
            raise
        return ()

    def encrypt(self, app, handle, data, outbuf):
        session = self._session(app, handle)
        return self._produce(session, ENCRYPT, "once", outbuf,
                             lambda a: a.operation.once(data), ends=True)

    def encrypt_update(self, app, handle, data, outbuf):
        session = self._session(app, handle)
        return self._produce(session, ENCRYPT, "update", outbuf,
                             lambda a: _mark(a).operation.update(data), ends=False)

    def encrypt_final(self, app, handle, outbuf):
        session = self._session(app, handle)
        return self._produce(session, ENCRYPT, "final", outbuf, lambda a: a.operation.final(),
                             ends=True)

    def decrypt(self, app, handle, data, outbuf):
        session = self._session(app, handle)
        return self._produce(session, DECRYPT, "once", outbuf,
                             lambda a: a.operation.once(data), ends=True)

    def decrypt_update(self, app, handle, data, outbuf):
        session = self._session(app, handle)
        return self._produce(session, DECRYPT, "update", outbuf,
                             lambda a: _mark(a).operation.update(data), ends=False)

    def decrypt_final(self, app, handle, outbuf):
        session = self._session(app, handle)
        return self._produce(session, DECRYPT, "final", outbuf, lambda a: a.operation.final(),
                             ends=True)

    def digest(self, app, handle, data, outbuf):
        session = self._session(app, handle)

        def once(active):
            active.operation.update(data)
            return active.operation.final()
        return self._produce(session, DIGEST, "once", outbuf, once, ends=True)

    def digest_update(self, app, handle, data):
        session = self._session(app, handle)
        return self._consume(session, DIGEST, lambda a: _mark(a).operation.update(data))

    def digest_key(self, app, handle, key_handle):
        session = self._session(app, handle)
        active = session.active(DIGEST)
        try:
            key = self._object(app, session, key_handle, KeyHandleInvalid)
            if key.cls != c.CKO_SECRET_KEY:
                raise KeyIndigestible("Only secret keys can be digested.")
            _mark(active).operation.update(key.secret_value())
        except BaseException:
            session.end(DIGEST)
            raise
        return ()

    def digest_final(self, app, handle, outbuf):
        session = self._session(app, handle)
        return self._produce(session, DIGEST, "final", outbuf, lambda a: a.operation.final(),
                             ends=True)

    def sign(self, app, handle, data, outbuf):
        session = self._session(app, handle)
        return self._produce(session, SIGN, "once", outbuf, lambda a: a.operation.sign(data),
                             ends=True)

    def sign_update(self, app, handle, data):
        session = self._session(app, handle)
        return self._consume(session, SIGN, lambda a: _mark(a).operation.update(data))

    def sign_final(self, app, handle, outbuf):
        session = self._session(app, handle)
        return self._produce(session, SIGN, "final", outbuf, lambda a: a.operation.final(),
                             ends=True)

    def verify(self, app, handle, data, signature):
        session = self._session(app, handle)
        self._consume(session, VERIFY, lambda a: a.operation.verify(data, signature))
        session.end(VERIFY)
        return ()

    def verify_update(self, app, handle, data):
        session = self._session(app, handle)
        return self._consume(session, VERIFY, lambda a: _mark(a).operation.update(data))

    def verify_final(self, app, handle, signature):
        session = self._session(app, handle)
        self._consume(session, VERIFY, lambda a: a.operation.final(signature))
        session.end(VERIFY)
        return ()

    # -- keys -------------------------------------------------------------------------------------

    def _spec(self, mechanism: Mechanism, function: str) -> MechanismSpec:
        spec = self._mechanisms().get(mechanism.type)
        if spec is None or getattr(spec, function) is None:
            raise MechanismInvalid(f"{c.mechanism_name(mechanism.type)} cannot {function}.")
        return spec

    def generate_key(self, app: Application, handle: int, mechanism: Mechanism,
                     template: list) -> tuple:
        session = self._session(app, handle)
        spec = self._spec(mechanism, "generate")
        t = obj_rules.template_dict(template)
        key_type = _generated_key_type(mechanism.type, t)
        attrs, _ = obj_rules.new_attributes(t, how=Creation.GENERATE, cls=c.CKO_SECRET_KEY,
                                            key_type=key_type)
        self._can_write(app, session, token=attrs[c.CKA_TOKEN], private=attrs[c.CKA_PRIVATE])
        value = spec.generate(attrs, mechanism, app.layout)
        obj_rules.finish_secret_key(attrs, value)
        obj_rules.set_key_origin(attrs, how=Creation.GENERATE, mechanism=mechanism.type)
        return (self._store(app, session, attrs, value).handle,)

    def generate_key_pair(self, app: Application, handle: int, mechanism: Mechanism,
                          public_template: list, private_template: list) -> tuple:
        session = self._session(app, handle)
        spec = self._spec(mechanism, "generate_pair")
        key_type = _PAIR_KEY_TYPES[mechanism.type]
        pub_t = obj_rules.template_dict(public_template)
        priv_t = obj_rules.template_dict(private_template)
        pub, _ = obj_rules.new_attributes(pub_t, how=Creation.GENERATE, cls=c.CKO_PUBLIC_KEY,
                                          key_type=key_type)
        priv, _ = obj_rules.new_attributes(priv_t, how=Creation.GENERATE, cls=c.CKO_PRIVATE_KEY,
                                           key_type=key_type)
        self._can_write(app, session, token=pub[c.CKA_TOKEN], private=pub[c.CKA_PRIVATE])
        self._can_write(app, session, token=priv[c.CKA_TOKEN], private=priv[c.CKA_PRIVATE])
        key = spec.generate_pair(pub, priv, mechanism, app.layout)
        if key_type != c.CKK_RSA:
            priv.setdefault(c.CKA_EC_PARAMS, pub.get(c.CKA_EC_PARAMS))
            pub.setdefault(c.CKA_EC_PARAMS, priv.get(c.CKA_EC_PARAMS))
        obj_rules.finish_public_key(pub, key.public_key())
        obj_rules.finish_private_key(priv, key)
        obj_rules.set_key_origin(pub, how=Creation.GENERATE, mechanism=mechanism.type)
        obj_rules.set_key_origin(priv, how=Creation.GENERATE, mechanism=mechanism.type)
        public = self._store(app, session, pub, None)
        try:
            private = self._store(app, session, priv, keys.pkcs8(key))
        except BaseException:
            self._discard(app, session, public)
            raise
        return (public.handle, private.handle)

    def _discard(self, app: Application, session: Session, obj: P11Object) -> None:
        if obj.handle >= SESSION_OBJECT_BASE:
            with app.lock:
                app.session_objects.pop(obj.handle, None)
        else:
            try:
                self.objects.destroy(session.serial, obj.handle)
            except core_errors.CoreError:
                pass

    def wrap_key(self, app: Application, handle: int, mechanism: Mechanism,
                 wrapping_handle: int, key_handle: int, outbuf: OutBuf) -> tuple:
        session = self._session(app, handle)
        spec = self._spec(mechanism, "wrap")
        wrapping = self._object(app, session, wrapping_handle, WrappingKeyHandleInvalid)
        if not wrapping.is_key or wrapping.key_type not in spec.key_types:
            raise WrappingKeyTypeInconsistent()
        if not wrapping.flag(c.CKA_WRAP):
            raise KeyFunctionNotPermitted("The wrapping key's CKA_WRAP is false.")
        _check_allowed(wrapping, mechanism.type)
        key = self._object(app, session, key_handle, KeyHandleInvalid)
        plaintext = self._wrappable(session, wrapping, key)
        cache_key = (mechanism.type, repr(mechanism.param), wrapping_handle, key_handle)
        pending = getattr(session, "pending_wrap", None)
        if pending is not None and pending[0] == cache_key:
            wrapped = pending[1]
        else:
            wrapped = spec.wrap(wrapping, mechanism, app.layout, plaintext)
        if not outbuf.has_buffer or outbuf.capacity < len(wrapped):
            session.pending_wrap = (cache_key, wrapped)
            if not outbuf.has_buffer:
                return (Output(None, len(wrapped)),)
            error = BufferTooSmall()
            error.fields = (len(wrapped),)
            raise error
        session.pending_wrap = None
        return (Output(wrapped, len(wrapped)),)

    def _wrappable(self, session: Session, wrapping: P11Object, key: P11Object) -> bytes:
        if key.cls not in (c.CKO_SECRET_KEY, c.CKO_PRIVATE_KEY):
            raise KeyNotWrappable("Only secret and private keys can be wrapped.")
        if not key.flag(c.CKA_EXTRACTABLE):
            raise KeyUnextractable()
        if key.flag(c.CKA_WRAP_WITH_TRUSTED) and not wrapping.flag(c.CKA_TRUSTED):
            raise KeyNotWrappable("The key may be wrapped only with a trusted key "
                                  "(CKA_WRAP_WITH_TRUSTED).")
        policies = self.core.partitions.get(session.serial).policies
        policy = PARTITION_PRIVATE_KEY_WRAPPING if key.cls == c.CKO_PRIVATE_KEY else \
            PARTITION_SECRET_KEY_WRAPPING
        if not policies.get(policy, 0):
            raise KeyNotWrappable(f"Partition policy {policy} does not allow wrapping "
                                  f"{'private' if policy == PARTITION_PRIVATE_KEY_WRAPPING else 'secret'} keys.")
        template = wrapping.attrs.get(c.CKA_WRAP_TEMPLATE) or ()
        if template and not obj_rules.matches(key, dict(template)):
            raise KeyNotWrappable("The key does not match the wrapping key's CKA_WRAP_TEMPLATE.")
        if key.cls == c.CKO_SECRET_KEY:
            return key.secret_value()
        return keys.pkcs8(key.crypto())

    def unwrap_key(self, app: Application, handle: int, mechanism: Mechanism,
                   unwrapping_handle: int, wrapped: bytes, template: list) -> tuple:
        session = self._session(app, handle)
        spec = self._spec(mechanism, "unwrap")
        unwrapping = self._object(app, session, unwrapping_handle, UnwrappingKeyHandleInvalid)
        if not unwrapping.is_key or unwrapping.key_type not in spec.key_types:
            raise UnwrappingKeyTypeInconsistent()
        if not unwrapping.flag(c.CKA_UNWRAP):
            raise KeyFunctionNotPermitted("The unwrapping key's CKA_UNWRAP is false.")
        _check_allowed(unwrapping, mechanism.type)
        t = _with_key_template(obj_rules.template_dict(template),
                               unwrapping.attrs.get(c.CKA_UNWRAP_TEMPLATE))
        cls = t.get(c.CKA_CLASS, c.CKO_SECRET_KEY)
        if cls not in (c.CKO_SECRET_KEY, c.CKO_PRIVATE_KEY):
            raise TemplateInconsistent("Only secret and private keys can be unwrapped.")
        plaintext = spec.unwrap(unwrapping, mechanism, app.layout, bytes(wrapped))
        if cls == c.CKO_PRIVATE_KEY:
            private_key = keys.load_pkcs8(plaintext)
            attrs, _ = obj_rules.new_attributes(t, how=Creation.UNWRAP, cls=cls,
                                                key_type=keys.key_type_of(private_key))
            self._can_write(app, session, token=attrs[c.CKA_TOKEN], private=attrs[c.CKA_PRIVATE])
            obj_rules.finish_private_key(attrs, private_key)
            secret = keys.pkcs8(private_key)
        else:
            if c.CKA_KEY_TYPE not in t:
                raise TemplateIncomplete("Unwrapping a secret key needs CKA_KEY_TYPE.")
            attrs, _ = obj_rules.new_attributes(t, how=Creation.UNWRAP, cls=cls)
            self._can_write(app, session, token=attrs[c.CKA_TOKEN], private=attrs[c.CKA_PRIVATE])
            length = attrs.get(c.CKA_VALUE_LEN)
            if length is not None and mechanism.type in (c.CKM_AES_ECB, c.CKM_AES_CBC):
                plaintext = plaintext[:length]  # the wrap padded with zeros
            secret = _check_secret(attrs[c.CKA_KEY_TYPE], plaintext)
            obj_rules.finish_secret_key(attrs, secret)
        obj_rules.set_key_origin(attrs, how=Creation.UNWRAP)
        return (self._store(app, session, attrs, secret).handle,)

    def derive_key(self, app: Application, handle: int, mechanism: Mechanism, base_handle: int,
                   template: list) -> tuple:
        if getattr(mechanism.param, "additional_keys", ()):
            raise MechanismParamInvalid("Additional derived keys need the DERIVE_KEYS request.")
        primary, _ = self.derive_keys(app, handle, mechanism, base_handle, template)
        return (primary,)

    def derive_keys(self, app: Application, handle: int, mechanism: Mechanism, base_handle: int,
                    template: list) -> tuple:
        """C_DeriveKey: the new key's handle and those of the mechanism's additional derived
        keys (SP 800-108's pAdditionalDerivedKeys). Every template is checked before any key is
        derived, and every key is checked before any is stored."""
        session = self._session(app, handle)
        spec = self._spec(mechanism, "derive")
        base = self._object(app, session, base_handle, KeyHandleInvalid)
        if mechanism.type == c.CKM_HKDF_DATA:
            if base.cls != c.CKO_DATA:
                raise KeyTypeInconsistent("CKM_HKDF_DATA derives from a data object.")
        else:
            if not base.is_key or base.key_type not in spec.key_types:
                raise KeyTypeInconsistent()
            if not base.flag(c.CKA_DERIVE):
                raise KeyFunctionNotPermitted("The base key's CKA_DERIVE is false.")
            _check_allowed(base, mechanism.type)
            _check_size(base, spec)
        templates = [template, *getattr(mechanism.param, "additional_keys", ())]
        derived = [self._derived_attributes(app, session, mechanism, base, t) for t in templates]

        def resolve(key_handle: int) -> P11Object:
            return self._object(app, session, key_handle, KeyHandleInvalid)

        if spec.derive_keys is not None:
            values = spec.derive_keys(base, mechanism, app.layout, resolve,
                                      [attrs for _, attrs in derived])
        else:
            values = [spec.derive(base, mechanism, app.layout, resolve, derived[0][1])]
        ready = []
        for (cls, attrs), value in zip(derived, values):
            if cls == c.CKO_DATA:
                attrs.pop(c.CKA_VALUE_LEN, None)
                attrs[c.CKA_VALUE] = value
                ready.append((attrs, None))
                continue
            if attrs[c.CKA_KEY_TYPE] == c.CKK_AES and c.CKA_VALUE_LEN not in attrs and \
                    len(value) not in (16, 24, 32):
                raise TemplateIncomplete("An AES key derived here needs CKA_VALUE_LEN.")
            secret = _check_secret(attrs[c.CKA_KEY_TYPE], value)
            obj_rules.finish_secret_key(attrs, secret)
            obj_rules.set_key_origin(attrs, how=Creation.DERIVE,
                                     base=base if base.is_key else None)
            ready.append((attrs, secret))
        handles = [self._store(app, session, attrs, secret).handle for attrs, secret in ready]
        return handles[0], handles[1:]

    def _derived_attributes(self, app: Application, session: Session, mechanism: Mechanism,
                            base: P11Object, template: list) -> tuple[int, dict]:
        """The class and attributes of a key C_DeriveKey makes from ``template`` (merged with the
        base key's CKA_DERIVE_TEMPLATE)."""
        t = _with_key_template(obj_rules.template_dict(template),
                               base.attrs.get(c.CKA_DERIVE_TEMPLATE))
        cls = t.get(c.CKA_CLASS, c.CKO_SECRET_KEY)
        if cls == c.CKO_DATA:
            if mechanism.type != c.CKM_HKDF_DATA:
                raise TemplateInconsistent("Only CKM_HKDF_DATA derives data objects.")
            length = t.pop(c.CKA_VALUE_LEN, None)  # how much data to derive
            attrs, _ = obj_rules.new_attributes(t, how=Creation.DERIVE, cls=cls)
            if length is not None:
                attrs[c.CKA_VALUE_LEN] = length
        elif cls == c.CKO_SECRET_KEY:
            attrs, _ = obj_rules.new_attributes(
                t, how=Creation.DERIVE, cls=cls,
                key_type=t.get(c.CKA_KEY_TYPE, c.CKK_GENERIC_SECRET))
        else:
            raise TemplateInconsistent("C_DeriveKey makes secret keys (or data, CKM_HKDF_DATA).")
        self._can_write(app, session, token=attrs[c.CKA_TOKEN], private=attrs[c.CKA_PRIVATE])
        return cls, attrs

    # -- random -----------------------------------------------------------------------------------

    def seed_random(self, app: Application, handle: int, seed: bytes) -> tuple:
        """C_SeedRandom (PKCS#11 v2.40 §5.15): mixes the seed into the token's generator, as a
        Luna does; no login is needed, like C_GenerateRandom."""
        self._session(app, handle)
        if len(seed) > MAX_RANDOM:
            raise ArgumentsBad(f"At most {MAX_RANDOM} bytes of seed per call.")
        try:
            with open(RANDOM_POOL, "wb", buffering=0) as pool:
                pool.write(seed)
        except OSError:
            raise RandomSeedNotSupported("The appliance's generator takes no seed here.") from None
        return ()

    def generate_random(self, app: Application, handle: int, length: int) -> tuple:
        self._session(app, handle)
        if length > MAX_RANDOM:
            raise ArgumentsBad(f"At most {MAX_RANDOM} random bytes per call.")
        return (os.urandom(length),)

    def finalize(self, app: Application) -> tuple:
        app.close_all()
        return ()

    def partition_reset(self, serial: str, applications) -> None:
        for app in applications:
            app.close_partition(serial)


# -- helpers ---------------------------------------------------------------------------------------


def _mark(active: ActiveOperation) -> ActiveOperation:
    active.multi_part = True
    return active


_PAIR_KEY_TYPES = {
    c.CKM_RSA_PKCS_KEY_PAIR_GEN: c.CKK_RSA,
    c.CKM_EC_KEY_PAIR_GEN: c.CKK_EC,
    c.CKM_EC_EDWARDS_KEY_PAIR_GEN: c.CKK_EC_EDWARDS,
}
_GENERIC_TYPES = frozenset({c.CKK_GENERIC_SECRET, c.CKK_SHA_1_HMAC, c.CKK_SHA224_HMAC,
                            c.CKK_SHA256_HMAC, c.CKK_SHA384_HMAC, c.CKK_SHA512_HMAC})


def _generated_key_type(mechanism: int, template: dict) -> int:
    given = template.get(c.CKA_KEY_TYPE)
    if mechanism == c.CKM_AES_KEY_GEN:
        return c.CKK_AES
    if mechanism == c.CKM_HKDF_KEY_GEN:
        return c.CKK_HKDF
    if given is not None and given not in _GENERIC_TYPES:
        raise TemplateInconsistent("CKM_GENERIC_SECRET_KEY_GEN makes generic or HMAC keys.")
    return given if given is not None else c.CKK_GENERIC_SECRET


def key_size(key: P11Object) -> int:
    """The key's size in the unit C_GetMechanismInfo uses: bits for RSA/EC, bytes for secrets."""
    size = key.size_cache
    if size is None:
        size = key.size_cache = _key_size(key)
    return size


def _key_size(key: P11Object) -> int:
    if key.key_type == c.CKK_RSA:
        modulus = key.attrs.get(c.CKA_MODULUS)
        return int.from_bytes(modulus, "big").bit_length() if modulus else 0
    if key.key_type in (c.CKK_EC, c.CKK_EC_EDWARDS):
        return keys.curve_of_params(key.attrs[c.CKA_EC_PARAMS], key.key_type).bits
    return key.attrs.get(c.CKA_VALUE_LEN, 0)


def _check_size(key: P11Object, spec: MechanismSpec) -> None:
    if spec.max_key and not spec.min_key <= key_size(key) <= spec.max_key:
        raise KeySizeRange(f"The key's size is outside {spec.min_key}..{spec.max_key}.")


def _check_allowed(key: P11Object, mechanism: int) -> None:
    allowed = key.attrs.get(c.CKA_ALLOWED_MECHANISMS)
    if allowed and mechanism not in allowed:
        raise MechanismInvalid("The key's CKA_ALLOWED_MECHANISMS does not include it.")


def _check_key(key: P11Object, spec: MechanismSpec, mechanism: int, usage: int) -> None:
    if not key.is_key:
        raise KeyHandleInvalid("The object is not a key.")
    if key.key_type not in spec.key_types:
        raise KeyTypeInconsistent()
    if not key.flag(usage):
        raise KeyFunctionNotPermitted(f"The key's {c.attribute_name(usage)} is false.")
    _check_allowed(key, mechanism)
    _check_size(key, spec)


def _with_key_template(template: dict, key_template) -> dict:
    """Merge a wrapping/deriving key's CKA_UNWRAP_TEMPLATE / CKA_DERIVE_TEMPLATE in; a conflict
    with the caller's template is inconsistent."""
    if not key_template:
        return template
    merged = dict(template)
    for type_, value in key_template:
        if type_ in merged and merged[type_] != value:
            raise TemplateInconsistent(f"{c.attribute_name(type_)} conflicts with the key's "
                                       "template.")
        merged[type_] = value
    return merged


def _check_secret(key_type: int, value: bytes) -> bytes:
    if key_type == c.CKK_AES and len(value) not in (16, 24, 32):
        raise TemplateInconsistent(f"An AES key is 16, 24 or 32 bytes, not {len(value)}.")
    if not value:
        raise TemplateInconsistent("A secret key needs at least one byte.")
    return bytes(value)


def _import_material(attrs: dict, t: dict) -> bytes | None:
    """C_CreateObject: check the key material in the template; returns the secret to store."""
    cls = attrs[c.CKA_CLASS]
    key_type = attrs.get(c.CKA_KEY_TYPE)
    if cls == c.CKO_SECRET_KEY:
        value = _check_secret(key_type, bytes(t[c.CKA_VALUE]))
        obj_rules.finish_secret_key(attrs, value)
        obj_rules.set_key_origin(attrs, how=Creation.CREATE)
        return value
    if cls == c.CKO_PRIVATE_KEY:
        if key_type == c.CKK_RSA:
            private_key = keys.rsa_private_key(t)
        else:
            curve = keys.curve_of_params(t[c.CKA_EC_PARAMS], key_type)
            private_key = keys.ec_private_key(curve, t[c.CKA_VALUE])
        obj_rules.finish_private_key(attrs, private_key)
        obj_rules.set_key_origin(attrs, how=Creation.CREATE)
        return keys.pkcs8(private_key)
    if cls == c.CKO_PUBLIC_KEY:
        if key_type == c.CKK_RSA:
            public_key = keys.rsa_public_key(t[c.CKA_MODULUS], t[c.CKA_PUBLIC_EXPONENT])
        else:
            curve = keys.curve_of_params(t[c.CKA_EC_PARAMS], key_type)
            public_key = keys.ec_public_key(curve, keys.unwrap_ec_point(t[c.CKA_EC_POINT], curve))
        obj_rules.finish_public_key(attrs, public_key)
        obj_rules.set_key_origin(attrs, how=Creation.CREATE)
        return None
    return None
