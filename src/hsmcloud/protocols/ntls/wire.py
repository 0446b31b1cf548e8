"""NTLS framing and primitive encodings (docs/ntls-protocol.md, "Transport" and "Encoding").

A frame is a 4-byte big-endian length then that many payload bytes. Payload fields are
big-endian integers, length-prefixed byte strings and the composite forms built on them.
"""

from __future__ import annotations

import socket
import struct

#: The largest payload a frame may carry.
MAX_FRAME = 16 * 1024 * 1024

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ProtocolError(Exception):
    """A frame or payload that breaks docs/ntls-protocol.md; the connection cannot continue."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection (cleanly, between frames, or in the middle of one)."""


# -- frames ---------------------------------------------------------------------------------


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    if count == 0:
        return b""
    chunks = []
    remaining = count
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionClosed(
                "connection closed" if remaining == count and not chunks else
                f"connection closed {count - remaining} bytes into a {count}-byte read")
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_frame(sock: socket.socket) -> bytes:
    """The next frame's payload; ConnectionClosed at end of stream, ProtocolError if oversized."""
    (length,) = _U32.unpack(_read_exactly(sock, 4))
    if length == 0 or length > MAX_FRAME:
        raise ProtocolError(f"frame length {length} is outside 1..{MAX_FRAME}")
    return _read_exactly(sock, length)


class FrameReader:
    """Reads frames from a stream socket with one ``recv`` per TLS record where it can (a frame
    the peer wrote at once arrives whole, header and payload), instead of one per field."""

    __slots__ = ("_sock", "_buffer")

    _CHUNK = 1 << 16

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self, needed: int) -> None:
        buffer = self._buffer
        while len(buffer) < needed:
            chunk = self._sock.recv(min(max(self._CHUNK, needed - len(buffer)), 1 << 20))
            if not chunk:
                raise ConnectionClosed(
                    "connection closed" if not buffer else
                    f"connection closed {len(buffer)} bytes into a {needed}-byte read")
            buffer += chunk

    def read(self) -> bytes:
        """The next frame's payload (as read_frame)."""
        self._fill(4)
        (length,) = _U32.unpack_from(self._buffer)
        if length == 0 or length > MAX_FRAME:
            raise ProtocolError(f"frame length {length} is outside 1..{MAX_FRAME}")
        self._fill(4 + length)
        payload = bytes(self._buffer[4:4 + length])
        del self._buffer[:4 + length]
        return payload


def frame(payload: bytes | bytearray) -> bytes:
    """``payload`` with its length prefix."""
    if not payload or len(payload) > MAX_FRAME:
        raise ProtocolError(f"payload length {len(payload)} is outside 1..{MAX_FRAME}")
    return _U32.pack(len(payload)) + bytes(payload)


def write_frame(sock: socket.socket, payload: bytes | bytearray) -> None:
    sock.sendall(frame(payload))


# -- payload fields -------------------------------------------------------------------------


class Reader:
    """Reads payload fields in order; every read past the end raises ProtocolError."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def _take(self, count: int) -> bytes:
        start = self._offset
        end = start + count
        if end > len(self._data):
            raise ProtocolError(f"payload ends at byte {len(self._data)}; a field needs {end}")
        self._offset = end
        return self._data[start:end]

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self._take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    ulong = u64

    def bool(self) -> bool:
        value = self.u8()
        if value > 1:
            raise ProtocolError(f"a bool is 0 or 1, not {value}")
        return value == 1

    def bytes(self) -> bytes:
        return self._take(self.u32())

    def string(self) -> str:
        try:
            return self.bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("a string field is not UTF-8") from None

    def opt_bytes(self) -> bytes | None:
        return self.bytes() if self.bool() else None

    def end(self) -> None:
        """Refuse trailing bytes: a payload is exactly its fields."""
        if self._offset != len(self._data):
            raise ProtocolError(f"{len(self._data) - self._offset} bytes after the last field")


class Writer:
    """Builds a payload field by field."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(_U8.pack(value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    ulong = u64

    def bool(self, value: bool) -> Writer:
        self._parts.append(b"\x01" if value else b"\x00")
        return self

    def bytes(self, value: bytes) -> Writer:
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(bytes(value))
        return self

    def string(self, value: str) -> Writer:
        return self.bytes(value.encode("utf-8"))

    def opt_bytes(self, value: bytes | None) -> Writer:
        if value is None:
            return self.u8(0)
        return self.u8(1).bytes(value)

    def payload(self) -> bytes:
        return b"".join(self._parts)
