"""Cloning between partitions of one cloning domain, object fingerprints, backup and restore.

A partition's cloning domain is kept as a PBKDF2 **domain secret** (``passwords.domain_secret``),
the same on every appliance for the same domain, sealed under the device key; HKDF-SHA256
derives one key per purpose from it. The public domain identifier comes from the domain's
digest (kept in clear for comparisons, another salt), so it gives the secret away no more than
the digest does. Nothing here ever lets an object's secret out in clear:

- the target partition makes an **offer**: a fresh X25519 public key, a random offer id, the
  target's serials and an expiry, MACed under the domain's offer key; the private half stays
  in memory here, single-use;
- the source checks the MAC under *its* domain (another domain does not verify) and encrypts
  the objects (AES-256-GCM) under a key derived from the X25519 shared secret *and* the
  domain's transport key, so only the offering partition, and only in the same domain, opens
  the **blob**;
- the target consumes the offer (a replayed blob finds none) and stores every object in one
  keystore transaction.

A **backup** is the partition's objects encrypted under a key derived from the domain's backup
key and a random salt: any partition of the same domain, on any appliance, restores it.
docs/ntls-protocol.md ("Cloning, backup and synchronize") is the specification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import (
    CloneDataInvalid,
    CloneOfferInvalid,
    CloningDomainMismatch,
    CloningNotAllowed,
    InvalidUsage,
    ObjectNotFound,
    PartitionChanged,
    PartitionNotInitialized,
)
from .hsm import HsmService
from .keystore import AttributeValue, Keystore, ObjectRecord, decode_attributes, encode_attributes
from .partitions import PartitionService, PartitionStatus
from .policies import (
    HSM_ALLOW_CLONING,
    HSM_ALLOW_NON_FIPS,
    HSM_NETWORK_REPLICATION,
    PARTITION_PRIVATE_KEY_CLONING,
    PARTITION_SECRET_KEY_CLONING,
)

OFFER_MAGIC = b"HSMCLONE-OFFER-1"
BLOB_MAGIC = b"HSMCLONE-BLOB-1"
BACKUP_MAGIC = b"HSMCLONE-BACKUP-1"
#: An offer is good for this long after it was made.
OFFER_LIFETIME_SECONDS = 300
#: Outstanding offers one partition keeps; a new one beyond this drops the oldest.
MAX_OFFERS_PER_PARTITION = 32
#: Objects one CLONE_EXPORT carries.
MAX_OBJECTS_PER_CLONE = 256
_OFFER_ID_BYTES = 16
_SALT_BYTES = 32
_NONCE_BYTES = 12

# PKCS#11 numbers the core needs (the core is protocol-neutral otherwise; these are data).
_CKA_CLASS = 0x000
_CKA_TOKEN = 0x001
_CKA_LABEL = 0x003
_CKA_APPLICATION = 0x010
_CKA_VALUE = 0x011
_CKA_CERTIFICATE_TYPE = 0x080
_CKA_KEY_TYPE = 0x100
_CKA_ID = 0x102
_CKA_MODULUS = 0x120
_CKA_PUBLIC_EXPONENT = 0x122
_CKA_EC_PARAMS = 0x180
_CKA_EC_POINT = 0x181
_CKO_PRIVATE_KEY = 3
_CKO_SECRET_KEY = 4
#: What identifies an object across partitions: a clone has exactly these of its original.
_FINGERPRINT_ATTRIBUTES = (
    _CKA_CLASS, _CKA_KEY_TYPE, _CKA_CERTIFICATE_TYPE, _CKA_ID, _CKA_LABEL, _CKA_APPLICATION,
    _CKA_MODULUS, _CKA_PUBLIC_EXPONENT, _CKA_EC_PARAMS, _CKA_EC_POINT, _CKA_VALUE,
)


class Writer:
    """Big-endian, length-prefixed fields of the offer, blob and backup formats."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u32(self, value: int) -> Writer:
        self._parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(struct.pack(">Q", value))
        return self

    def bytes(self, value: bytes) -> Writer:
        return self.u32(len(value))._add(bytes(value))

    def string(self, value: str) -> Writer:
        return self.bytes(value.encode("utf-8"))

    def _add(self, raw: bytes) -> Writer:
        self._parts.append(raw)
        return self

    def payload(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def _take(self, count: int) -> bytes:
        if self._at + count > len(self._data):
            raise ValueError("truncated")
        raw = self._data[self._at:self._at + count]
        self._at += count
        return raw

    def u32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self._take(8))[0]

    def bytes(self) -> bytes:
        return self._take(self.u32())

    def string(self) -> str:
        return self.bytes().decode("utf-8")

    def end(self) -> None:
        if self._at != len(self._data):
            raise ValueError("trailing bytes")


@dataclass(frozen=True, kw_only=True)
class CloningInfo:
    initialized: bool
    domain_id: str
    hsm_allow_cloning: int
    hsm_network_replication: int
    hsm_allow_non_fips: int
    private_key_cloning: int
    secret_key_cloning: int


@dataclass(frozen=True, kw_only=True)
class Fingerprint:
    handle: int
    cls: int
    fingerprint: bytes


@dataclass(frozen=True, kw_only=True)
class BackupHeader:
    appliance: str
    serial: str
    label: str
    created: int
    objects: int


@dataclass
class _Offer:
    serial: str
    generation: int
    expires: float
    private_key: X25519PrivateKey = field(repr=False)


def _derive(domain_secret: bytes, purpose: str, *, salt: bytes | None = None,
            extra: bytes = b"") -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                info=f"hsmcloud/luna/cloning/{purpose}/v1".encode()).derive(domain_secret + extra)


def domain_id(status: PartitionStatus) -> str:
    """A public identifier of the partition's cloning domain ("" when not initialized)."""
    if not status.initialized or not status.domain_digest:
        return ""
    return _derive(status.domain_digest.encode("ascii"), "domain-id")[:16].hex()


def _encode_objects(records: Sequence[ObjectRecord]) -> bytes:
    return json.dumps([
        {"a": encode_attributes(r.attributes), "s": None if r.secret is None else r.secret.hex()}
        for r in records
    ], separators=(",", ":")).encode()


def _decode_objects(plaintext: bytes) -> list[tuple[dict[int, AttributeValue], bytes | None]]:
    try:
        entries = json.loads(plaintext)
        objects = []
        for entry in entries:
            attributes = decode_attributes(entry["a"])
            if not isinstance(attributes.get(_CKA_CLASS), int):
                raise ValueError("an object without a class")
            if attributes.get(_CKA_TOKEN) is not True:
                raise ValueError("a session object")
            secret = entry["s"]
            objects.append((attributes, None if secret is None else bytes.fromhex(secret)))
        return objects
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CloneDataInvalid("The clone data decrypted but does not hold token objects.") from None


def _read(data: bytes, parse: Callable[[Reader], object], what: str):
    try:
        reader = Reader(bytes(data))
        value = parse(reader)
        reader.end()
        return value
    except (ValueError, UnicodeDecodeError):
        raise CloneDataInvalid(f"The data is not an hsmcloud {what}.") from None


class CloningService:
    """Offers, exports, imports, fingerprints, backups and restores of one appliance."""

    def __init__(self, *, appliance_serial: Callable[[], str], hsm: HsmService,
                 partitions: PartitionService, keystore: Keystore,
                 clock: Callable[[], float] = time.time) -> None:
        self._appliance_serial = appliance_serial
        self._hsm = hsm
        self._partitions = partitions
        self._keystore = keystore
        self._clock = clock
        self._offers: dict[bytes, _Offer] = {}
        self._lock = threading.Lock()

    # -- what decides cloning -------------------------------------------------------------

    def info(self, serial: str) -> CloningInfo:
        status = self._partitions.get(serial)
        policies = self._hsm.policies()
        return CloningInfo(
            initialized=status.initialized,
            domain_id=domain_id(status),
            hsm_allow_cloning=policies[HSM_ALLOW_CLONING],
            hsm_network_replication=policies[HSM_NETWORK_REPLICATION],
            hsm_allow_non_fips=policies[HSM_ALLOW_NON_FIPS],
            private_key_cloning=status.policies[PARTITION_PRIVATE_KEY_CLONING],
            secret_key_cloning=status.policies[PARTITION_SECRET_KEY_CLONING],
        )

    def _check_policies(self, status: PartitionStatus,
                        objects: Sequence[Mapping[int, AttributeValue]], *, what: str) -> None:
        if not self._hsm.policy(HSM_ALLOW_CLONING):
            raise CloningNotAllowed(
                f"HSM policy 7 (Allow cloning) is 0 on the appliance of partition "
                f"{status.serial}: no key material can be {what}."
            )
        for attributes in objects:
            cls = attributes.get(_CKA_CLASS)
            if cls == _CKO_PRIVATE_KEY and not status.policies[PARTITION_PRIVATE_KEY_CLONING]:
                raise CloningNotAllowed(
                    f"Partition policy 0 (Allow private key cloning) is 0 on partition "
                    f"{status.serial}: private keys cannot be {what}. Nothing was changed."
                )
            if cls == _CKO_SECRET_KEY and not status.policies[PARTITION_SECRET_KEY_CLONING]:
                raise CloningNotAllowed(
                    f"Partition policy 4 (Allow secret key cloning) is 0 on partition "
                    f"{status.serial}: secret keys cannot be {what}. Nothing was changed."
                )

    def _check_replication(self, other_appliance: str) -> None:
        """Cloning to or from another appliance needs HSM policy 16 (network replication)."""
        if other_appliance != self._appliance_serial() and not self._hsm.policy(
                HSM_NETWORK_REPLICATION):
            raise CloningNotAllowed(
                "HSM policy 16 (Allow network replication) is 0 on this appliance: it clones "
                f"with no other appliance (here: {other_appliance}). Nothing was cloned."
            )

    def _domain_secret(self, status: PartitionStatus) -> bytes:
        secret = self._partitions.domain_secret(status.serial, status.generation)
        if secret is None:
            raise CloningNotAllowed(
                f"Partition {status.serial} ({status.name}) was initialized before this appliance "
                "kept cloning-domain secrets: initialize it again to clone, back up or restore."
            )
        return secret

    def _status(self, serial: str, generation: int) -> PartitionStatus:
        status = self._partitions.get(serial)
        if not status.initialized:
            raise PartitionNotInitialized(f"Partition {serial} is not initialized.")
        if status.generation != generation:
            raise PartitionChanged()
        return status

    # -- offer / export / import ----------------------------------------------------------

    def offer(self, serial: str, generation: int) -> bytes:
        """The target partition's one-time offer to receive cloned objects."""
        status = self._status(serial, generation)
        secret = self._domain_secret(status)
        if not self._hsm.policy(HSM_ALLOW_CLONING):
            raise CloningNotAllowed(
                "HSM policy 7 (Allow cloning) is 0 on this appliance: it accepts no clones.")
        private_key = X25519PrivateKey.generate()
        offer_id = secrets.token_bytes(_OFFER_ID_BYTES)
        expires = self._clock() + OFFER_LIFETIME_SECONDS
        body = (Writer().bytes(OFFER_MAGIC).bytes(offer_id).string(self._appliance_serial())
                .string(serial).u64(int(expires))
                .bytes(private_key.public_key().public_bytes_raw()).payload())
        mac = hmac.new(_derive(secret, "offer"), body, hashlib.sha256).digest()
        with self._lock:
            self._expire()
            mine = [k for k, o in self._offers.items() if o.serial == serial]
            for stale in mine[: max(0, len(mine) - MAX_OFFERS_PER_PARTITION + 1)]:
                del self._offers[stale]
            self._offers[offer_id] = _Offer(serial=serial, generation=generation,
                                            expires=expires, private_key=private_key)
        return Writer().bytes(body).bytes(mac).payload()

    def _expire(self) -> None:
        now = self._clock()
        for stale in [k for k, o in self._offers.items() if o.expires <= now]:
            del self._offers[stale]

    def export(self, serial: str, generation: int, offer: bytes, handles: Sequence[int]) -> bytes:
        """The source partition's objects ``handles``, encrypted to ``offer``."""
        if not handles or len(handles) > MAX_OBJECTS_PER_CLONE:
            raise InvalidUsage(f"Clone 1 to {MAX_OBJECTS_PER_CLONE} objects at a time.")
        status = self._status(serial, generation)
        secret = self._domain_secret(status)
        body, mac = _read(offer, lambda r: (r.bytes(), r.bytes()), "clone offer")

        def parse_body(r: Reader):
            if r.bytes() != OFFER_MAGIC:
                raise ValueError("magic")
            return r.bytes(), r.string(), r.string(), r.u64(), r.bytes()

        offer_id, target_appliance, target_serial, expires, public = _read(
            body, parse_body, "clone offer")
        expected = hmac.new(_derive(secret, "offer"), body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise CloningDomainMismatch(
                f"The offer does not come from a partition in the cloning domain of partition "
                f"{serial}: the partitions are in different cloning domains. Nothing was cloned."
            )
        del expires  # the target, whose clock made it, enforces it at import
        self._check_replication(target_appliance)
        records = []
        for handle in handles:
            try:
                records.append(self._keystore.get(serial, handle))
            except ObjectNotFound:
                raise ObjectNotFound(
                    f"There is no token object {handle} in partition {serial}.") from None
        self._check_policies(status, [r.attributes for r in records], what="cloned")
        try:
            peer = X25519PublicKey.from_public_bytes(public)
        except ValueError:
            raise CloneDataInvalid("The clone offer's public key is not an X25519 key.") from None
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(peer)
        key = _derive(_derive(secret, "transport"), "blob", salt=offer_id, extra=shared)
        header = (Writer().bytes(BLOB_MAGIC).bytes(offer_id).string(self._appliance_serial())
                  .string(serial).string(target_appliance).string(target_serial)
                  .bytes(ephemeral.public_key().public_bytes_raw()).payload())
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, _encode_objects(records), header)
        return Writer().bytes(header).bytes(nonce).bytes(ciphertext).payload()

    def import_blob(self, serial: str, generation: int, blob: bytes) -> list[int]:
        """Store a CLONE_EXPORT blob made for one of this partition's offers (consumed)."""
        status = self._status(serial, generation)
        secret = self._domain_secret(status)
        header, nonce, ciphertext = _read(blob, lambda r: (r.bytes(), r.bytes(), r.bytes()),
                                          "clone blob")

        def parse_header(r: Reader):
            if r.bytes() != BLOB_MAGIC:
                raise ValueError("magic")
            return r.bytes(), r.string(), r.string(), r.string(), r.string(), r.bytes()

        offer_id, source_appliance, _source_serial, _target_appliance, target_serial, public = \
            _read(header, parse_header, "clone blob")
        self._check_replication(source_appliance)
        with self._lock:
            self._expire()
            offer = self._offers.get(offer_id)
            if (offer is None or offer.serial != serial or target_serial != serial
                    or offer.generation != generation):
                raise CloneOfferInvalid()
            # consumed now, whatever follows: a blob opens at most once
            del self._offers[offer_id]
        try:
            shared = offer.private_key.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError:
            raise CloneDataInvalid("The clone blob's public key is not an X25519 key.") from None
        key = _derive(_derive(secret, "transport"), "blob", salt=offer_id, extra=shared)
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, header)
        except (InvalidTag, ValueError):
            raise CloningDomainMismatch(
                f"The clone blob does not open in the cloning domain of partition {serial}: the "
                "partitions are in different cloning domains (or the blob was modified). "
                "Nothing was cloned."
            ) from None
        objects = _decode_objects(plaintext)
        self._check_policies(status, [a for a, _ in objects], what="cloned into it")
        records, _ = self._keystore.create_many(serial, generation=generation, items=objects)
        return [r.handle for r in records]

    # -- fingerprints ---------------------------------------------------------------------

    @staticmethod
    def _fingerprint(key: bytes, attributes: Mapping[int, AttributeValue],
                     secret: bytes | None) -> bytes:
        identity = {k: attributes[k] for k in _FINGERPRINT_ATTRIBUTES if k in attributes}
        canonical = json.dumps(encode_attributes(identity), sort_keys=True,
                               separators=(",", ":")).encode()
        mac = hmac.new(key, canonical, hashlib.sha256)
        mac.update(b"\0secret\0" + (secret if secret is not None else b""))
        return mac.digest()

    def fingerprints(self, serial: str, generation: int) -> list[Fingerprint]:
        status = self._status(serial, generation)
        key = _derive(self._domain_secret(status), "fingerprint")
        return [Fingerprint(handle=r.handle, cls=int(r.attributes.get(_CKA_CLASS, 0)),
                            fingerprint=self._fingerprint(key, r.attributes, r.secret))
                for r in self._keystore.objects(serial)]

    # -- backup / restore -----------------------------------------------------------------

    def backup(self, serial: str, generation: int) -> bytes:
        """Every token object of the partition, as a file only its cloning domain opens."""
        status = self._status(serial, generation)
        secret = self._domain_secret(status)
        records = self._keystore.objects(serial)
        self._check_policies(status, [r.attributes for r in records], what="backed up")
        salt = secrets.token_bytes(_SALT_BYTES)
        header = (Writer().bytes(BACKUP_MAGIC).string(self._appliance_serial()).string(serial)
                  .string(status.label or "").u64(int(self._clock())).u32(len(records))
                  .bytes(salt).payload())
        key = _derive(_derive(secret, "backup"), "backup-file", salt=salt)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, _encode_objects(records), header)
        return Writer().bytes(header).bytes(nonce).bytes(ciphertext).payload()

    @staticmethod
    def backup_header(data: bytes) -> tuple[BackupHeader, bytes, bytes, bytes, bytes]:
        """The readable header of a backup file (and its parts); CloneDataInvalid if it is none."""
        header, nonce, ciphertext = _read(data, lambda r: (r.bytes(), r.bytes(), r.bytes()),
                                          "backup file")

        def parse(r: Reader):
            if r.bytes() != BACKUP_MAGIC:
                raise ValueError("magic")
            return (BackupHeader(appliance=r.string(), serial=r.string(), label=r.string(),
                                 created=r.u64(), objects=r.u32()), r.bytes())

        info, salt = _read(header, parse, "backup file")
        return info, header, salt, nonce, ciphertext

    def restore(self, serial: str, generation: int, data: bytes, *,
                replace: bool = False) -> tuple[int, int]:
        """Store a backup's objects the partition lacks (by fingerprint); ``replace`` destroys
        the partition's objects first. One transaction. Returns (restored, skipped)."""
        status = self._status(serial, generation)
        secret = self._domain_secret(status)
        _, header, salt, nonce, ciphertext = self.backup_header(data)
        key = _derive(_derive(secret, "backup"), "backup-file", salt=salt)
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, header)
        except (InvalidTag, ValueError):
            raise CloningDomainMismatch(
                f"The backup does not open in the cloning domain of partition {serial}: it was "
                "made by a partition of another cloning domain (or modified). Nothing was "
                "restored."
            ) from None
        objects = _decode_objects(plaintext)
        self._check_policies(status, [a for a, _ in objects], what="restored into it")
        fp_key = _derive(secret, "fingerprint")
        present = set() if replace else {
            self._fingerprint(fp_key, r.attributes, r.secret) for r in self._keystore.objects(serial)
        }
        wanted = []
        for attributes, obj_secret in objects:
            fp = self._fingerprint(fp_key, attributes, obj_secret)
            if fp not in present:
                present.add(fp)
                wanted.append((attributes, obj_secret))
        if wanted or replace:
            self._keystore.create_many(serial, generation=generation, items=wanted,
                                       replace=replace)
        return len(wanted), len(objects) - len(wanted)

    def forget(self, serial: str | None = None) -> None:
        """Drop the outstanding offers (of one partition, or all)."""
        with self._lock:
            for key in [k for k, o in self._offers.items() if serial is None or o.serial == serial]:
                del self._offers[key]
