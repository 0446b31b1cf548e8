"""A small Python client of the NTLS protocol (docs/ntls-protocol.md).

TLS with the client's certificate; the server must present exactly the pinned ``server.pem``.
One request at a time per connection (use several clients for concurrency). Every call
returns the response's fields or raises :class:`Pkcs11Error` with the CKR code.

    with NtlsClient.connect("127.1.1.10", 1792, certificate=..., private_key=...,
                            server_certificate=...) as ntls:
        session = ntls.open_session(serial, c.CKF_SERIAL_SESSION | c.CKF_RW_SESSION)
        ntls.login(session, c.CKU_USER, b"co-pin")
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hsmcloud.protocols.ntls import messages
from hsmcloud.protocols.ntls.messages import Hello, HelloReply, Output
from hsmcloud.protocols.ntls.opcodes import Op
from hsmcloud.protocols.ntls.wire import FrameReader, write_frame
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import ATTRIBUTE_KINDS, Kind, NativeLayout
from hsmcloud.protocols.pkcs11.params import Mechanism

CLIENT_SOFTWARE = "hsmcloud-python-ntls/1"


class Pkcs11Error(Exception):
    """The appliance answered ``rv`` (not CKR_OK); ``fields`` are the response fields it carried."""

    def __init__(self, rv: int, op: Op, fields: list | None = None) -> None:
        self.rv = rv
        self.op = op
        self.fields = fields or []
        super().__init__(f"{op.name}: {c.rv_name(rv)}")

    @property
    def name(self) -> str:
        return c.rv_name(self.rv)


class ServerCertificateMismatch(ssl.SSLError):
    """The appliance presented a certificate other than the pinned server.pem."""


def _der_of(pem_path: str | Path) -> bytes:
    certificate = x509.load_pem_x509_certificate(Path(pem_path).read_bytes())
    return certificate.public_bytes(serialization.Encoding.DER)


class NtlsClient:
    def __init__(self, sock: ssl.SSLSocket, *, layout: NativeLayout, application_id: int) -> None:
        self._sock = sock
        self._frames = FrameReader(sock)
        self.layout = layout
        self.application_id = application_id
        self.server: HelloReply | None = None
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, address: str, port: int, *, certificate: str | Path,
                private_key: str | Path, server_certificate: str | Path,
                application_id: int | None = None, layout: NativeLayout | None = None,
                timeout: float | None = 20.0, version: int = messages.VERSION) -> NtlsClient:
        """Open a TLS connection, check the pinned server certificate and say HELLO."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False  # the pin below is stronger than a host name
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(server_certificate))
        context.load_cert_chain(str(certificate), str(private_key))
        raw = socket.create_connection((address, port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = context.wrap_socket(raw, server_hostname=None)
        except BaseException:
            raw.close()
            raise
        try:
            if sock.getpeercert(binary_form=True) != _der_of(server_certificate):
                raise ServerCertificateMismatch("the appliance's certificate is not the pinned one")
            client = cls(sock, layout=layout or NativeLayout(8, "little"),
                         application_id=application_id if application_id is not None
                         else int.from_bytes(os.urandom(8), "big"))
            client.server = client.hello(version)
        except BaseException:
            sock.close()
            raise
        return client

    def __enter__(self) -> NtlsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    # -- the protocol -------------------------------------------------------------------------

    def hello(self, version: int = messages.VERSION) -> HelloReply:
        hello = Hello(version, self.layout.ulong_size, 1 if self.layout.byte_order == "big" else 0,
                      self.application_id, os.getpid(), CLIENT_SOFTWARE)
        (reply,) = self.call(Op.HELLO, hello)
        return reply

    def call(self, op: Op, *fields) -> list:
        """Send one request; the response's fields (CKR_OK) or Pkcs11Error."""
        message = messages.MESSAGES[op]
        payload = messages.encode_request(op, fields, self.layout)
        with self._lock:
            write_frame(self._sock, payload)
            response = self._frames.read()
        rv, values = messages.decode_response(message, response, self.layout)
        if rv != c.CKR_OK:
            raise Pkcs11Error(rv, op, values)
        return values

    def send_raw(self, payload: bytes) -> bytes:
        """One raw frame out and one in (for tests of malformed requests)."""
        with self._lock:
            write_frame(self._sock, payload)
            return self._frames.read()

    # -- slots, tokens, sessions ---------------------------------------------------------------

    def list_partitions(self) -> list[messages.PartitionEntry]:
        return self.call(Op.LIST_PARTITIONS)[0]

    def get_slot_info(self, serial: str) -> list:
        return self.call(Op.GET_SLOT_INFO, serial)

    def get_token_info(self, serial: str) -> dict[str, Any]:
        v = self.call(Op.GET_TOKEN_INFO, serial)
        names = ("label", "manufacturer", "model", "serial", "flags", "max_sessions", "sessions",
                 "max_rw_sessions", "rw_sessions", "max_pin", "min_pin", "total_public",
                 "free_public", "total_private", "free_private", "hw_major", "hw_minor",
                 "fw_major", "fw_minor", "utc_time")
        return dict(zip(names, v))

    def get_mechanism_list(self, serial: str) -> list[int]:
        return self.call(Op.GET_MECHANISM_LIST, serial)[0]

    def get_mechanism_info(self, serial: str, mechanism: int) -> tuple[int, int, int]:
        return tuple(self.call(Op.GET_MECHANISM_INFO, serial, mechanism))

    def init_token(self, serial: str, so_pin: bytes | None, label: str) -> None:
        raw = label.encode("utf-8")[:32]
        self.call(Op.INIT_TOKEN, serial, so_pin, raw + b" " * (32 - len(raw)))

    def open_session(self, serial: str, flags: int = c.CKF_SERIAL_SESSION | c.CKF_RW_SESSION) -> int:
        return self.call(Op.OPEN_SESSION, serial, flags)[0]

    def close_session(self, session: int) -> None:
        self.call(Op.CLOSE_SESSION, session)

    def close_all_sessions(self, serial: str) -> None:
        self.call(Op.CLOSE_ALL_SESSIONS, serial)

    def get_session_info(self, session: int) -> tuple[int, int, int]:
        return tuple(self.call(Op.GET_SESSION_INFO, session))

    def init_pin(self, session: int, pin: bytes | None) -> None:
        self.call(Op.INIT_PIN, session, pin)

    def set_pin(self, session: int, old: bytes | None, new: bytes | None) -> None:
        self.call(Op.SET_PIN, session, old, new)

    def login(self, session: int, user_type: int, pin: bytes | None) -> None:
        self.call(Op.LOGIN, session, user_type, pin)

    def logout(self, session: int) -> None:
        self.call(Op.LOGOUT, session)

    # -- objects -----------------------------------------------------------------------------

    def create_object(self, session: int, template: list) -> int:
        return self.call(Op.CREATE_OBJECT, session, template)[0]

    def copy_object(self, session: int, handle: int, template: list) -> int:
        return self.call(Op.COPY_OBJECT, session, handle, template)[0]

    def destroy_object(self, session: int, handle: int) -> None:
        self.call(Op.DESTROY_OBJECT, session, handle)

    def get_object_size(self, session: int, handle: int) -> int:
        return self.call(Op.GET_OBJECT_SIZE, session, handle)[0]

    def get_attribute_value(self, session: int, handle: int, requests: list) -> list:
        """``requests``: (type, buffer length or None) pairs; the AttributeResults (raises with
        them in ``fields[0]`` for CKR_ATTRIBUTE_SENSITIVE / _TYPE_INVALID / BUFFER_TOO_SMALL)."""
        return self.call(Op.GET_ATTRIBUTE_VALUE, session, handle, requests)[0]

    def get_attributes(self, session: int, handle: int, *types: int) -> dict[int, Any]:
        """Typed values of readable attributes (size query, then read)."""
        sizes = self.get_attribute_value(session, handle, [(t, None) for t in types])
        results = self.get_attribute_value(
            session, handle, [(t, r.value_length) for t, r in zip(types, sizes)])
        return {t: self._typed(t, r.value) for t, r in zip(types, results)}

    def _typed(self, type_: int, raw: bytes):
        if ATTRIBUTE_KINDS.get(type_) is Kind.TEMPLATE:  # an attribute array: its template
            return tuple(messages.decode_attribute_array(raw, self.layout))
        return self.layout.decode_value(type_, raw)

    def set_attribute_value(self, session: int, handle: int, template: list) -> None:
        self.call(Op.SET_ATTRIBUTE_VALUE, session, handle, template)

    def find_objects(self, session: int, template: list, max_count: int = 1000) -> list[int]:
        self.call(Op.FIND_OBJECTS_INIT, session, template)
        found: list[int] = []
        try:
            while True:
                chunk = self.call(Op.FIND_OBJECTS, session, max_count)[0]
                found.extend(chunk)
                if len(chunk) < max_count:
                    return found
        finally:
            self.call(Op.FIND_OBJECTS_FINAL, session)

    # -- cryptography --------------------------------------------------------------------------

    def _output(self, op: Op, *fields, capacity: int | None = -1) -> bytes | int:
        """Run an output call; ``capacity=-1`` sizes the buffer first (query, then fetch)."""
        if capacity == -1:
            (size,) = self.call(op, *fields, None)
            (out,) = self.call(op, *fields, size.needed)
            return out.data
        (out,) = self.call(op, *fields, capacity)
        return out.data if out.data is not None else out.needed

    def encrypt_init(self, session: int, mechanism: Mechanism | int, key: int) -> None:
        self.call(Op.ENCRYPT_INIT, session, mechanism, key)

    def encrypt(self, session: int, data: bytes, capacity: int | None = 1 << 20):
        return self._output(Op.ENCRYPT, session, data, capacity=capacity)

    def encrypt_update(self, session: int, data: bytes, capacity: int | None = 1 << 20):
        return self._output(Op.ENCRYPT_UPDATE, session, data, capacity=capacity)

    def encrypt_final(self, session: int, capacity: int | None = 1 << 20):
        return self._output(Op.ENCRYPT_FINAL, session, capacity=capacity)

    def decrypt_init(self, session: int, mechanism: Mechanism | int, key: int) -> None:
        self.call(Op.DECRYPT_INIT, session, mechanism, key)

    def decrypt(self, session: int, data: bytes, capacity: int | None = 1 << 20):
        return self._output(Op.DECRYPT, session, data, capacity=capacity)

    def decrypt_update(self, session: int, data: bytes, capacity: int | None = 1 << 20):
        return self._output(Op.DECRYPT_UPDATE, session, data, capacity=capacity)

    def decrypt_final(self, session: int, capacity: int | None = 1 << 20):
        return self._output(Op.DECRYPT_FINAL, session, capacity=capacity)

    def digest_init(self, session: int, mechanism: Mechanism | int) -> None:
        self.call(Op.DIGEST_INIT, session, mechanism)

    def digest(self, session: int, data: bytes, capacity: int | None = 1024):
        return self._output(Op.DIGEST, session, data, capacity=capacity)

    def digest_update(self, session: int, data: bytes) -> None:
        self.call(Op.DIGEST_UPDATE, session, data)

    def digest_key(self, session: int, key: int) -> None:
        self.call(Op.DIGEST_KEY, session, key)

    def digest_final(self, session: int, capacity: int | None = 1024):
        return self._output(Op.DIGEST_FINAL, session, capacity=capacity)

    def sign_init(self, session: int, mechanism: Mechanism | int, key: int) -> None:
        self.call(Op.SIGN_INIT, session, mechanism, key)

    def sign(self, session: int, data: bytes, capacity: int | None = 1024):
        return self._output(Op.SIGN, session, data, capacity=capacity)

    def sign_update(self, session: int, data: bytes) -> None:
        self.call(Op.SIGN_UPDATE, session, data)

    def sign_final(self, session: int, capacity: int | None = 1024):
        return self._output(Op.SIGN_FINAL, session, capacity=capacity)

    def verify_init(self, session: int, mechanism: Mechanism | int, key: int) -> None:
        self.call(Op.VERIFY_INIT, session, mechanism, key)

    def verify(self, session: int, data: bytes, signature: bytes) -> None:
        self.call(Op.VERIFY, session, data, signature)

    def verify_update(self, session: int, data: bytes) -> None:
        self.call(Op.VERIFY_UPDATE, session, data)

    def verify_final(self, session: int, signature: bytes) -> None:
        self.call(Op.VERIFY_FINAL, session, signature)

    def generate_key(self, session: int, mechanism: Mechanism | int, template: list) -> int:
        return self.call(Op.GENERATE_KEY, session, mechanism, template)[0]

    def generate_key_pair(self, session: int, mechanism: Mechanism | int, public_template: list,
                          private_template: list) -> tuple[int, int]:
        public, private = self.call(Op.GENERATE_KEY_PAIR, session, mechanism, public_template,
                                    private_template)
        return public, private

    def wrap_key(self, session: int, mechanism: Mechanism | int, wrapping_key: int, key: int,
                 capacity: int | None = -1):
        return self._output(Op.WRAP_KEY, session, mechanism, wrapping_key, key, capacity=capacity)

    def unwrap_key(self, session: int, mechanism: Mechanism | int, unwrapping_key: int,
                   wrapped: bytes, template: list) -> int:
        return self.call(Op.UNWRAP_KEY, session, mechanism, unwrapping_key, wrapped, template)[0]

    def derive_key(self, session: int, mechanism: Mechanism | int, base_key: int,
                   template: list) -> int:
        return self.call(Op.DERIVE_KEY, session, mechanism, base_key, template)[0]

    def derive_keys(self, session: int, mechanism: Mechanism, base_key: int,
                    template: list) -> tuple[int, list[int]]:
        """C_DeriveKey with additional derived keys (SP 800-108): the primary key's handle and
        those of the additional keys, in order."""
        primary, more = self.call(Op.DERIVE_KEYS, session, mechanism, base_key, template)
        return primary, list(more)

    def seed_random(self, session: int, seed: bytes) -> None:
        self.call(Op.SEED_RANDOM, session, seed)

    def generate_random(self, session: int, length: int) -> bytes:
        return self.call(Op.GENERATE_RANDOM, session, length)[0]

    def finalize(self) -> None:
        self.call(Op.FINALIZE)

    # -- cloning, backup, synchronize (docs/ntls-protocol.md, "Cloning") ---------------------

    def get_cloning_info(self, serial: str) -> messages.CloningInfo:
        """Domain identifier and the cloning policies of a partition (no login needed)."""
        return self.call(Op.GET_CLONING_INFO, serial)[0]

    def clone_offer(self, session: int) -> bytes:
        """On the target partition (CO logged in): a one-time offer to receive cloned objects."""
        return self.call(Op.CLONE_OFFER, session)[0]

    def clone_export(self, session: int, offer: bytes, handles: list[int]) -> bytes:
        """On the source partition (CO logged in): the objects, encrypted to ``offer``."""
        return self.call(Op.CLONE_EXPORT, session, offer, list(handles))[0]

    def clone_import(self, session: int, blob: bytes) -> list[int]:
        """On the target partition (CO logged in): store a CLONE_EXPORT blob; the new handles."""
        return self.call(Op.CLONE_IMPORT, session, blob)[0]

    def list_object_fingerprints(self, session: int) -> list[messages.ObjectFingerprint]:
        return self.call(Op.LIST_OBJECT_FINGERPRINTS, session)[0]

    def backup(self, session: int) -> bytes:
        """The partition's token objects as a backup file only its cloning domain can restore."""
        return self.call(Op.BACKUP, session)[0]

    def restore(self, session: int, backup: bytes, *, replace: bool = False) -> tuple[int, int]:
        """Restore a backup file: (objects restored, objects skipped as already present)."""
        restored, skipped = self.call(Op.RESTORE, session, backup, replace)
        return restored, skipped

    def admin(self, action: str, **arguments) -> dict[str, Any]:
        """A LunaCM administration action; the JSON answer (``ok`` false answers are returned,
        not raised)."""
        (answer,) = self.call(Op.ADMIN, json.dumps({"action": action, **arguments}))
        return json.loads(answer)


def clone_objects(source: NtlsClient, source_session: int, target: NtlsClient,
                  target_session: int, handles: list[int]) -> list[int]:
    """Clone token objects from one partition to another (both with the CO logged in): the
    target offers, the source exports to the offer, the target imports. The new handles."""
    offer = target.clone_offer(target_session)
    blob = source.clone_export(source_session, offer, handles)
    return target.clone_import(target_session, blob)


__all__ = ["NtlsClient", "clone_objects", "Pkcs11Error", "ServerCertificateMismatch", "Output"]
