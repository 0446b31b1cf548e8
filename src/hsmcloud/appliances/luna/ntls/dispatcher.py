"""The NTLS connection loop: read a frame, decode it, call the PKCS#11 function, answer.

``NtlsDispatcher.serve_connection`` runs in the thread the NTLS listener gives each accepted
(handshaken) connection. The first message must be ``HELLO``; it names the application and
its CK_ULONG layout. A malformed frame ends the connection (after ``CKR_ARGUMENTS_BAD`` where
possible); a refused call answers its CKR code and the loop goes on.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from hsmcloud.protocols.ntls import messages
from hsmcloud.protocols.ntls.messages import HelloReply, Message, UnknownOpcode
from hsmcloud.protocols.ntls.opcodes import Op
from hsmcloud.protocols.ntls.wire import ConnectionClosed, FrameReader, ProtocolError, write_frame
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import AttributeValueInvalid, NativeLayout

from ..core.appliance_core import ApplianceCore
from ..core.product import FIRMWARE_VERSION, MODEL, SOFTWARE_VERSION
from ..pkcs11.cloning import CloningCalls
from ..pkcs11.errors import CkError, rv_of
from ..pkcs11.sessions import Application
from ..pkcs11.token import Pkcs11Service
from .admin import AdminActions
from .applications import ApplicationRegistry

logger = logging.getLogger(__name__)

#: Protocol versions this server speaks.
SUPPORTED_VERSIONS = (1,)
#: The layout used to answer before HELLO said which one the client has.
_DEFAULT_LAYOUT = NativeLayout(8, "little")


class NtlsDispatcher:
    """Serves NTLS connections of one appliance."""

    def __init__(self, core: ApplianceCore) -> None:
        self.core = core
        self.service = Pkcs11Service(core)
        self.applications = ApplicationRegistry()
        self.admin = AdminActions(self.service, on_reset=self.partition_reset)
        s = self.service
        cloning = CloningCalls(s)
        self._handlers: dict[int, Any] = {
            Op.LIST_PARTITIONS: s.list_partitions,
            Op.GET_SLOT_INFO: s.get_slot_info,
            Op.GET_TOKEN_INFO: s.get_token_info,
            Op.GET_MECHANISM_LIST: s.get_mechanism_list,
            Op.GET_MECHANISM_INFO: s.get_mechanism_info,
            Op.INIT_TOKEN: self._init_token,
            Op.OPEN_SESSION: s.open_session,
            Op.CLOSE_SESSION: s.close_session,
            Op.CLOSE_ALL_SESSIONS: s.close_all_sessions,
            Op.GET_SESSION_INFO: s.get_session_info,
            Op.INIT_PIN: s.init_pin,
            Op.SET_PIN: s.set_pin,
            Op.LOGIN: s.login,
            Op.LOGOUT: s.logout,
            Op.CREATE_OBJECT: s.create_object,
            Op.COPY_OBJECT: s.copy_object,
            Op.DESTROY_OBJECT: s.destroy_object,
            Op.GET_OBJECT_SIZE: s.get_object_size,
            Op.GET_ATTRIBUTE_VALUE: s.get_attribute_value,
            Op.SET_ATTRIBUTE_VALUE: s.set_attribute_value,
            Op.FIND_OBJECTS_INIT: s.find_objects_init,
            Op.FIND_OBJECTS: s.find_objects,
            Op.FIND_OBJECTS_FINAL: s.find_objects_final,
            Op.ENCRYPT_INIT: s.encrypt_init,
            Op.ENCRYPT: s.encrypt,
            Op.ENCRYPT_UPDATE: s.encrypt_update,
            Op.ENCRYPT_FINAL: s.encrypt_final,
            Op.DECRYPT_INIT: s.decrypt_init,
            Op.DECRYPT: s.decrypt,
            Op.DECRYPT_UPDATE: s.decrypt_update,
            Op.DECRYPT_FINAL: s.decrypt_final,
            Op.DIGEST_INIT: s.digest_init,
            Op.DIGEST: s.digest,
            Op.DIGEST_UPDATE: s.digest_update,
            Op.DIGEST_KEY: s.digest_key,
            Op.DIGEST_FINAL: s.digest_final,
            Op.SIGN_INIT: s.sign_init,
            Op.SIGN: s.sign,
            Op.SIGN_UPDATE: s.sign_update,
            Op.SIGN_FINAL: s.sign_final,
            Op.VERIFY_INIT: s.verify_init,
            Op.VERIFY: s.verify,
            Op.VERIFY_UPDATE: s.verify_update,
            Op.VERIFY_FINAL: s.verify_final,
            Op.GENERATE_KEY: s.generate_key,
            Op.GENERATE_KEY_PAIR: s.generate_key_pair,
            Op.WRAP_KEY: s.wrap_key,
            Op.UNWRAP_KEY: s.unwrap_key,
            Op.DERIVE_KEY: s.derive_key,
            Op.DERIVE_KEYS: s.derive_keys,
            Op.SEED_RANDOM: s.seed_random,
            Op.GENERATE_RANDOM: s.generate_random,
            Op.FINALIZE: s.finalize,
            Op.ADMIN: self.admin.handle,
            Op.GET_CLONING_INFO: cloning.get_cloning_info,
            Op.CLONE_OFFER: cloning.clone_offer,
            Op.CLONE_EXPORT: cloning.clone_export,
            Op.CLONE_IMPORT: cloning.clone_import,
            Op.LIST_OBJECT_FINGERPRINTS: cloning.list_object_fingerprints,
            Op.BACKUP: cloning.backup,
            Op.RESTORE: cloning.restore,
        }
        #: Requests whose first field is a session handle: calls on one session are serialized.
        self._by_session = frozenset(
            op for op, m in messages.MESSAGES.items()
            if m.request and m.request[0] is messages.SESSION and op not in (Op.CLOSE_SESSION,))

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """The appliance stops (or is reset): every application's sessions and logins end."""
        self.applications.close_all()

    def partition_reset(self, serial: str) -> None:
        """A partition was zeroized, re-initialized or deleted: its sessions end everywhere."""
        self.service.partition_reset(serial, self.applications.applications())

    def _init_token(self, app: Application, serial: str, so_pin, label) -> tuple:
        result = self.service.init_token(app, serial, so_pin, label)
        self.partition_reset(serial)
        return result

    # -- one connection --------------------------------------------------------------------------

    def serve_connection(self, sock: socket.socket, *, client) -> None:
        """Serve one accepted connection of ``client`` (a RegisteredClient) until it ends."""
        app: Application | None = None
        try:
            # one request, one response: never wait for more bytes before sending
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            frames = FrameReader(sock)
            app, layout = self._hello(sock, frames, client)
            if app is None:
                return
            while True:
                payload = frames.read()
                response, close = self._call(app, layout, payload)
                write_frame(sock, response)
                if close:
                    return
        except ConnectionClosed:
            pass
        except ProtocolError as exc:
            logger.info("NTLS client %s: connection closed: %s", client.name, exc)
        except OSError as exc:
            logger.info("NTLS client %s: connection lost: %s", client.name, exc)
        finally:
            if app is not None:
                self.applications.detach(app, client.fingerprint)
            try:
                sock.close()
            except OSError:
                pass

    def _hello(self, sock, frames: FrameReader, client) -> tuple[Application | None, NativeLayout]:
        payload = frames.read()
        try:
            message, reader = messages.decode_request_header(payload)
        except UnknownOpcode:
            message = None
        if message is None or message.op != Op.HELLO:
            write_frame(sock, messages.encode_response(
                messages.MESSAGES[Op.HELLO], c.CKR_CRYPTOKI_NOT_INITIALIZED, (), _DEFAULT_LAYOUT))
            return None, _DEFAULT_LAYOUT
        try:
            (hello,) = messages.decode_fields(message, reader, _DEFAULT_LAYOUT)
            layout = NativeLayout(hello.ulong_size, "big" if hello.byte_order else "little")
            if hello.byte_order > 1:
                raise ValueError("byte_order is 0 or 1")
        except (ProtocolError, ValueError) as exc:
            write_frame(sock, messages.encode_response(message, c.CKR_ARGUMENTS_BAD, (),
                                                       _DEFAULT_LAYOUT))
            raise ProtocolError(f"bad HELLO: {exc}") from None
        versions = [v for v in SUPPORTED_VERSIONS if v <= hello.version]
        if not versions:
            write_frame(sock, messages.encode_response(message, c.CKR_FUNCTION_NOT_SUPPORTED, (),
                                                       layout))
            return None, layout
        app = self.applications.attach(client_name=client.name, fingerprint=client.fingerprint,
                                       application_id=hello.application_id, layout=layout)
        reply = HelloReply(max(versions), self.core.serial, MODEL, FIRMWARE_VERSION,
                           SOFTWARE_VERSION)
        try:
            write_frame(sock, messages.encode_response(message, c.CKR_OK, (reply,), layout))
        except BaseException:
            self.applications.detach(app, client.fingerprint)
            raise
        logger.info("NTLS client %s: application %016x (pid %d, %s) connected", client.name,
                    hello.application_id, hello.pid, _printable(hello.client_software))
        return app, layout

    def _call(self, app: Application, layout: NativeLayout, payload: bytes) -> tuple[bytes, bool]:
        """The response to one request payload, and whether the connection must close."""
        try:
            message, reader = messages.decode_request_header(payload)
        except UnknownOpcode:
            return messages.Writer().u32(c.CKR_FUNCTION_NOT_SUPPORTED).payload(), False
        except ProtocolError:
            return messages.Writer().u32(c.CKR_ARGUMENTS_BAD).payload(), True
        if message.op == Op.HELLO:
            return self._answer(message, c.CKR_ARGUMENTS_BAD, (), layout), True
        try:
            values = messages.decode_fields(message, reader, layout)
        except AttributeValueInvalid:
            return self._answer(message, c.CKR_ATTRIBUTE_VALUE_INVALID, (), layout), False
        except ProtocolError:
            return self._answer(message, c.CKR_ARGUMENTS_BAD, (), layout), True
        handler = self._handlers.get(message.op)
        if handler is None:
            return self._answer(message, c.CKR_FUNCTION_NOT_SUPPORTED, (), layout), False
        try:
            lock = None
            if message.op in self._by_session:
                session = app.sessions.get(values[0])
                lock = session.lock if session is not None else None
            if lock is not None:
                with lock:
                    result = handler(app, *values)
            else:
                result = handler(app, *values)
            return self._answer(message, c.CKR_OK, result, layout), False
        except CkError as exc:
            return self._answer(message, exc.rv, exc.fields, layout), False
        except AttributeValueInvalid:
            return self._answer(message, c.CKR_ATTRIBUTE_VALUE_INVALID, (), layout), False
        except Exception as exc:  # core errors and anything unforeseen
            rv = rv_of(exc)
            if rv == c.CKR_GENERAL_ERROR:
                logger.exception("NTLS %s failed unexpectedly", message.op.name)
            return self._answer(message, rv, (), layout), False

    @staticmethod
    def _answer(message: Message, rv: int, fields, layout: NativeLayout) -> bytes:
        expected = message.response if rv == c.CKR_OK else message.on_error.get(rv, ())
        if len(fields) != len(expected):
            if expected:
                logger.error("NTLS %s: rv %s without its response fields", message.op.name,
                             c.rv_name(rv))
                rv = c.CKR_GENERAL_ERROR
            fields = ()
        return messages.encode_response(message, rv, fields, layout)


def _printable(text: str, limit: int = 64) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
