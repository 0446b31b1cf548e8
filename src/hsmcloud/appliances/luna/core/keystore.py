"""The partitions' token objects, persistent and encrypted at rest.

An object is its non-sensitive attributes (JSON in SQLite) and, for keys, its secret value
(PKCS#8 DER of a private key, CKA_VALUE of a secret key) sealed with AES-256-GCM under the
partition's key; the additional data binds partition serial, generation and handle, so a
sealed value moved to another row or partition does not open. Every change is one
transaction committed before the call returns, so an acknowledged object survives a crash.

Reads never touch SQLite once a partition is loaded: an in-memory index holds every object
of the partition with its secret already opened. The index is dropped when the partition's
key changes (re-initialization, zeroization), when the partition is gone, and when a
destructive policy change destroyed its objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Union

from .clock import Clock, stored
from .errors import (
    KeystoreFull,
    ObjectChanged,
    ObjectNotFound,
    PartitionChanged,
    PartitionNotInitialized,
    StateError,
)
from .partitions import PartitionService
from .sealing import seal, unseal
from .state import ApplianceState

AttributeValue = Union[bool, int, bytes, str, list, dict]

#: Handles stay within a signed 32-bit range, so a 32-bit client's CK_ULONG holds them;
#: the PKCS#11 layer numbers session objects from 0x80000000 up.
MAX_HANDLE = 0x7FFFFFFF
#: Token objects one partition may hold (the A790 holds ~19,000 RSA-2048 keys per HSM).
MAX_OBJECTS_PER_PARTITION = 100_000


@dataclass(frozen=True, kw_only=True)
class ObjectRecord:
    """One token object. ``attributes`` never holds a sensitive value; ``secret`` is the key
    material (never printed)."""

    handle: int
    serial: str
    attributes: Mapping[int, AttributeValue]
    secret: bytes | None = field(default=None, repr=False)
    version: int = 1


def object_aad(serial: str, generation: int, handle: int) -> bytes:
    return b"hsmcloud/luna/object/v1\0" + f"{serial}\0{generation}\0{handle}".encode()


# -- attribute codec (JSON with type tags; bytes in hex) --------------------------------


def _encode_value(value: AttributeValue) -> list:
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["x", bytes(value).hex()]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError("attribute arrays other than templates hold integers only")
        return ["l", list(value)]
    if isinstance(value, Mapping):
        return ["t", encode_attributes(value)]
    raise TypeError(f"attribute value of type {type(value).__name__} cannot be stored")


def _decode_value(tagged: list) -> AttributeValue:
    tag, value = tagged
    if tag == "b":
        return bool(value)
    if tag == "i":
        return int(value)
    if tag == "x":
        return bytes.fromhex(value)
    if tag == "s":
        return str(value)
    if tag == "l":
        return [int(v) for v in value]
    if tag == "t":
        return decode_attributes(value)
    raise StateError(f"unknown stored attribute tag {tag!r}")


def encode_attributes(attributes: Mapping[int, AttributeValue]) -> dict:
    return {str(int(k)): _encode_value(v) for k, v in attributes.items()}


def decode_attributes(encoded: dict) -> dict[int, AttributeValue]:
    return {int(k): _decode_value(v) for k, v in encoded.items()}


def _frozen(attributes: Mapping[int, AttributeValue]) -> Mapping[int, AttributeValue]:
    return MappingProxyType(dict(attributes))


@dataclass
class _Loaded:
    """A partition's objects as loaded for one partition key."""

    key_id: str
    generation: int
    key: bytes = field(repr=False)
    records: dict[int, ObjectRecord] = field(default_factory=dict)


class Keystore:
    """Token objects of every partition."""

    def __init__(self, state: ApplianceState, partitions: PartitionService, clock: Clock) -> None:
        self._state = state
        self._partitions = partitions
        self._clock = clock
        self._loaded: dict[str, _Loaded] = {}
        partitions.contents_destroyed.append(self._forget)
        partitions.reloaded.append(self._prune)

    def _prune(self, statuses) -> None:
        """Drop the objects of partitions that are gone or have a new key (zeroized, re-initialized)."""
        for serial in list(self._loaded):
            status = statuses.get(serial)
            if status is None or status.key_id != self._loaded[serial].key_id:
                del self._loaded[serial]

    def _forget(self, serial: str) -> None:
        with self._state.lock:
            self._loaded.pop(serial, None)

    def forget_all(self) -> None:
        with self._state.lock:
            self._loaded.clear()

    def _partition(self, serial: str) -> _Loaded:
        status = self._partitions.get(serial)
        if not status.initialized:
            raise PartitionNotInitialized(
                f"Partition {serial} ({status.name}) is not initialized: it holds no objects."
            )
        loaded = self._loaded.get(serial)
        if loaded is not None and loaded.key_id == status.key_id:
            return loaded
        with self._state.lock:
            status = self._partitions.get(serial)
            loaded = self._loaded.get(serial)
            if loaded is not None and loaded.key_id == status.key_id:
                return loaded
            key = self._partitions.partition_key(serial, status.generation)
            assert status.key_id is not None
            loaded = _Loaded(key_id=status.key_id, generation=status.generation, key=key)
            for handle, generation, version, attributes, sealed in self._state.query(
                "SELECT handle, generation, version, attributes, secret_sealed"
                " FROM keystore_objects WHERE serial = ? ORDER BY handle",
                (serial,),
            ):
                if generation != status.generation:
                    raise StateError(f"object {handle} of partition {serial} is of another generation")
                loaded.records[handle] = ObjectRecord(
                    handle=handle,
                    serial=serial,
                    attributes=_frozen(decode_attributes(json.loads(attributes))),
                    secret=None if sealed is None else unseal(key, sealed, object_aad(serial, generation, handle)),
                    version=version,
                )
            self._loaded[serial] = loaded
            return loaded

    # -- reading ------------------------------------------------------------------------

    def objects(self, serial: str) -> list[ObjectRecord]:
        """Every token object of the partition, in handle order (from memory)."""
        return list(self._partition(serial).records.values())

    def get(self, serial: str, handle: int) -> ObjectRecord:
        record = self._partition(serial).records.get(handle)
        if record is None:
            raise ObjectNotFound(f"There is no object {handle} in partition {serial}.")
        return record

    def count(self, serial: str) -> int:
        return len(self._partition(serial).records)

    # -- changing -----------------------------------------------------------------------

    def create(
        self,
        serial: str,
        *,
        generation: int,
        attributes: Mapping[int, AttributeValue],
        secret: bytes | None = None,
    ) -> ObjectRecord:
        """Store a new object; it is durable when this returns."""
        encoded = json.dumps(encode_attributes(attributes), separators=(",", ":"))
        with self._state.lock:
            loaded = self._partition(serial)
            if loaded.generation != generation:
                raise PartitionChanged()
            if len(loaded.records) >= MAX_OBJECTS_PER_PARTITION:
                raise KeystoreFull(
                    f"Partition {serial} already holds {MAX_OBJECTS_PER_PARTITION} objects."
                )
            with self._state.transaction() as db:
                self._require(db, serial, generation)
                cursor = db.execute(
                    "INSERT INTO keystore_objects (serial, generation, version, attributes,"
                    " secret_sealed, created_at) VALUES (?, ?, 1, ?, NULL, ?)",
                    (serial, generation, encoded, stored(self._clock())),
                )
                handle = cursor.lastrowid
                assert handle is not None
                if handle > MAX_HANDLE:
                    raise KeystoreFull("The appliance has used up its object handles.")
                if secret is not None:
                    db.execute(
                        "UPDATE keystore_objects SET secret_sealed = ? WHERE handle = ?",
                        (seal(loaded.key, bytes(secret), object_aad(serial, generation, handle)), handle),
                    )
            record = ObjectRecord(
                handle=handle,
                serial=serial,
                attributes=_frozen(attributes),
                secret=None if secret is None else bytes(secret),
            )
            loaded.records[handle] = record
            return record

    def create_many(
        self,
        serial: str,
        *,
        generation: int,
        items: Sequence[tuple[Mapping[int, AttributeValue], bytes | None]],
        replace: bool = False,
    ) -> tuple[list[ObjectRecord], int]:
        """Store several new objects in one transaction (cloning, restore): all or none, durable
        when this returns. ``replace`` first destroys every object of the partition, in the
        same transaction. Returns the new records and how many objects were destroyed."""
        encoded = [json.dumps(encode_attributes(a), separators=(",", ":")) for a, _ in items]
        with self._state.lock:
            loaded = self._partition(serial)
            if loaded.generation != generation:
                raise PartitionChanged()
            kept = 0 if replace else len(loaded.records)
            if kept + len(items) > MAX_OBJECTS_PER_PARTITION:
                raise KeystoreFull(
                    f"Partition {serial} holds {kept} objects; {len(items)} more would exceed "
                    f"its {MAX_OBJECTS_PER_PARTITION}. Nothing was stored."
                )
            now = stored(self._clock())
            handles: list[int] = []
            with self._state.transaction() as db:
                self._require(db, serial, generation)
                destroyed = 0
                if replace:
                    destroyed = db.execute(
                        "DELETE FROM keystore_objects WHERE serial = ?", (serial,)
                    ).rowcount
                for text, (_, secret) in zip(encoded, items):
                    cursor = db.execute(
                        "INSERT INTO keystore_objects (serial, generation, version, attributes,"
                        " secret_sealed, created_at) VALUES (?, ?, 1, ?, NULL, ?)",
                        (serial, generation, text, now),
                    )
                    handle = cursor.lastrowid
                    assert handle is not None
                    if handle > MAX_HANDLE:
                        raise KeystoreFull("The appliance has used up its object handles.")
                    if secret is not None:
                        db.execute(
                            "UPDATE keystore_objects SET secret_sealed = ? WHERE handle = ?",
                            (seal(loaded.key, bytes(secret), object_aad(serial, generation, handle)),
                             handle),
                        )
                    handles.append(handle)
            if replace:
                loaded.records.clear()
            records = []
            for handle, (attributes, secret) in zip(handles, items):
                record = ObjectRecord(
                    handle=handle,
                    serial=serial,
                    attributes=_frozen(attributes),
                    secret=None if secret is None else bytes(secret),
                )
                loaded.records[handle] = record
                records.append(record)
        if replace and destroyed:
            self._state.scrub()
        return records, destroyed

    def update(
        self,
        serial: str,
        handle: int,
        attributes: Mapping[int, AttributeValue],
        *,
        expected_version: int,
    ) -> ObjectRecord:
        """Replace an object's attributes (its secret stays); refuses if it changed meanwhile."""
        encoded = json.dumps(encode_attributes(attributes), separators=(",", ":"))
        with self._state.lock:
            loaded = self._partition(serial)
            current = loaded.records.get(handle)
            if current is None:
                raise ObjectNotFound(f"There is no object {handle} in partition {serial}.")
            if current.version != expected_version:
                raise ObjectChanged()
            with self._state.transaction() as db:
                self._require(db, serial, loaded.generation)
                cursor = db.execute(
                    "UPDATE keystore_objects SET attributes = ?, version = version + 1"
                    " WHERE handle = ? AND serial = ? AND version = ?",
                    (encoded, handle, serial, expected_version),
                )
                if cursor.rowcount != 1:
                    raise ObjectChanged()
            record = ObjectRecord(
                handle=handle,
                serial=serial,
                attributes=_frozen(attributes),
                secret=current.secret,
                version=expected_version + 1,
            )
            loaded.records[handle] = record
            return record

    def destroy(self, serial: str, handle: int) -> None:
        with self._state.lock:
            loaded = self._partition(serial)
            if handle not in loaded.records:
                raise ObjectNotFound(f"There is no object {handle} in partition {serial}.")
            with self._state.transaction() as db:
                self._require(db, serial, loaded.generation)
                db.execute(
                    "DELETE FROM keystore_objects WHERE handle = ? AND serial = ?", (handle, serial)
                )
            loaded.records.pop(handle, None)

    def _require(self, db, serial: str, generation: int) -> None:
        row = db.execute(
            "SELECT initialized, generation FROM partition_state WHERE serial = ?", (serial,)
        ).fetchone()
        if row is None or not row[0]:
            raise PartitionNotInitialized(f"Partition {serial} is not initialized.")
        if row[1] != generation:
            raise PartitionChanged()
