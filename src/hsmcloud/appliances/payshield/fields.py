"""Reading the fields of a host command message (a latin-1 string: one char per byte)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import HostError
from .lmk import KEY_USAGES, MODES_OF_USE, SCHEME_LENGTHS, KeyBlockAttributes

_HEX = frozenset("0123456789ABCDEFabcdef")
TRAILER_DELIMITER = "\x19"

#: Key-block algorithm codes of the '#' attributes -> (header algorithm, key length).
KEYBLOCK_ALGORITHMS = {
    "T1": ("T", 8), "T2": ("T", 16), "T3": ("T", 24),
    "A1": ("A", 16), "A2": ("A", 24), "A3": ("A", 32),
}


@dataclass(kw_only=True)
class Trailing:
    """The optional delimited fields after a command's own fields."""

    lmk_id: str | None = None
    block: str | None = None  # the 10 characters after '#'
    version_id: str | None = None  # after '!'

    def attributes(self) -> tuple[KeyBlockAttributes, int]:
        """The '#' key-block attributes and the key length they ask for."""
        if self.block is None:
            raise HostError("15", "key-block attributes ('#...') are required")
        usage, algorithm, mode, kvn, export = (
            self.block[0:2], self.block[2:4], self.block[4], self.block[5:7], self.block[7]
        )
        if usage not in KEY_USAGES:
            raise HostError("A6", f"key usage {usage!r} is neither a TR-31 nor a Thales usage")
        if algorithm not in KEYBLOCK_ALGORITHMS:
            raise HostError("A7", f"algorithm {algorithm!r}")
        if mode not in MODES_OF_USE:
            raise HostError("A8", f"mode of use {mode!r}")
        if not (kvn.isascii() and kvn.isalnum()):
            raise HostError("15", "key version number must be 2 letters or digits")
        if export not in ("E", "N", "S"):
            raise HostError("15", "exportability must be E, N or S")
        if self.block[8:10] != "00":
            raise HostError("15", "optional key-block blocks are not supported")
        header_alg, length = KEYBLOCK_ALGORITHMS[algorithm]
        attrs = KeyBlockAttributes(
            usage=usage, algorithm=header_alg, mode_of_use=mode, version=kvn, exportability=export
        )
        return attrs, length


class Cursor:
    """Consumes a message body field by field; every shortfall is error 15."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.trailer: str | None = None

    @property
    def remaining(self) -> int:
        return len(self.text) - self.pos

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def take(self, n: int) -> str:
        if n < 0 or self.pos + n > len(self.text):
            raise HostError("15", "message too short")
        value = self.text[self.pos : self.pos + n]
        self.pos += n
        return value

    def take_hex(self, n: int) -> str:
        value = self.take(n)
        if not _HEX.issuperset(value):
            raise HostError("15", "expected hexadecimal characters")
        return value.upper()

    def take_bytes_hex(self, n: int) -> bytes:
        return bytes.fromhex(self.take_hex(n))

    def take_digits(self, n: int) -> str:
        value = self.take(n)
        if not value.isdecimal() or not value.isascii():
            raise HostError("15", "expected decimal digits")
        return value

    def take_binary(self, n: int) -> bytes:
        return self.take(n).encode("latin-1")

    def optional(self, delimiter: str) -> bool:
        if self.peek(len(delimiter)) == delimiter:
            self.pos += len(delimiter)
            return True
        return False

    def until(self, delimiter: str, *, max_length: int) -> str:
        end = self.text.find(delimiter, self.pos, self.pos + max_length + 1)
        if end < 0:
            raise HostError("15", f"delimiter {delimiter!r} missing")
        value = self.text[self.pos : end]
        self.pos = end + len(delimiter)
        return value

    def key(self) -> str:
        """A key field: scheme tag + hex (Z/U/T/X/Y), a key block (S/R), or 16 bare hex."""
        tag = self.peek(1)
        if tag in SCHEME_LENGTHS:
            field = tag + self.take(1 + SCHEME_LENGTHS[tag] * 2)[1:]
            if not _HEX.issuperset(field[1:]):
                raise HostError("15", "key is not hexadecimal")
            return field
        if tag in ("S", "R"):
            length = self.text[self.pos + 2 : self.pos + 6]
            if len(length) != 4 or not length.isdecimal() or int(length) < 16:
                raise HostError("83", "key block length field")
            return self.take(1 + int(length))
        field = self.take(16)
        if not _HEX.issuperset(field):
            raise HostError("15", "key is not hexadecimal")
        return field

    def lmk_id_hint(self) -> str | None:
        """The '%nn' LMK identifier at the end of the message, found before parsing to it."""
        body = self.text
        cut = body.find(TRAILER_DELIMITER, self.pos)
        if cut >= 0:
            body = body[:cut]
        at = body.rfind("%")
        if at >= 0 and len(body) - at in (3,) and body[at + 1 : at + 3].isdecimal():
            return body[at + 1 : at + 3]
        return None

    def trailing(self, *, block_attributes: bool = False, version_id: bool = False) -> Trailing:
        """Parse the optional trailing fields; anything else left over is error 15."""
        result = Trailing()
        while not self.done():
            mark = self.take(1)
            if mark == "%" and result.lmk_id is None:
                result.lmk_id = self.take_digits(2)
            elif mark == "#" and block_attributes and result.block is None:
                result.block = self.take(10)
            elif mark == "!" and version_id and result.version_id is None:
                result.version_id = self.take(1)
            elif mark == TRAILER_DELIMITER:
                self.trailer = self.text[self.pos :]
                self.pos = len(self.text)
            else:
                raise HostError("15", f"unexpected data at offset {self.pos - 1}")
        return result
