"""The host application's side of the RSA commands: request builders and response parsers.

For tests and the benchmark (``bench/payshield_bench.py`` can build EW/EY traffic with these):
every function works on the message body after the header, as bytes. Nothing here touches an
LMK; the appliance's handlers are in :mod:`.rsa` and :mod:`.signatures`.

    ei = ei_request("0", 2048)                      # b"EI0204802"
    public_der, private_field = parse_ej(response)  # response = b"EJ00..."
    ew = ew_request(b"data", private_field)         # SHA-256, RSA, PKCS#1 v1.5
    signature = parse_ex(response)
"""

from __future__ import annotations


class HostResponseError(Exception):
    """A response that is not the expected success answer."""

    def __init__(self, response: bytes) -> None:
        super().__init__(f"payShield answered {response[:4]!r}")
        self.response = response
        self.error_code = response[2:4].decode("latin-1")


def _success(response: bytes, code: bytes) -> bytes:
    if response[:2] != code or response[2:4] != b"00":
        raise HostResponseError(response)
    return response[4:]


def der_length(der: bytes) -> int:
    """Total length of the DER element at the start of ``der`` (tag, length and content)."""
    first = der[1]
    if first & 0x80:
        count = first & 0x7F
        return 2 + count + int.from_bytes(der[2 : 2 + count], "big")
    return 2 + first


def ei_request(key_type: str = "0", bits: int = 2048, encoding: str = "02", *, lmk_id: str | None = None,
               keyblock: bool = False, exportability: str = "N") -> bytes:
    """EI: key type 0 (signature) / 1 (key management) / 2 (both); ``keyblock`` adds ``#0000&N``."""
    message = f"EI{key_type}{bits:04d}{encoding}"
    if lmk_id is not None:
        message += f"%{lmk_id}"
    if keyblock:
        message += f"#0000&{exportability}"
    return message.encode("latin-1")


def parse_ej(response: bytes) -> tuple[bytes, bytes]:
    """EJ -> (public key DER, private key field: length (4N) + key, or FFFF + key block)."""
    body = _success(response, b"EJ")
    end = der_length(body)
    return body[:end], body[end:]


def eo_request(public_der: bytes, encoding: str = "02", auth: bytes = b"", *, lmk_id: str | None = None) -> bytes:
    return b"EO" + encoding.encode() + public_der + auth + (f"%{lmk_id}".encode() if lmk_id else b"")


def parse_ep(response: bytes) -> bytes:
    """EP -> what EY/GK take as the public key: MAC (4B) + DER, or the public key's key block."""
    return _success(response, b"EP")


def ew_request(data: bytes, private_field: bytes, hash_id: str = "06", *, lmk_id: str | None = None) -> bytes:
    """EW: sign ``data`` (RSA, PKCS#1 v1.5) with a private key field from :func:`parse_ej`."""
    return (
        f"EW{hash_id}0101{len(data):04d}".encode() + data + b";99" + private_field
        + (f"%{lmk_id}".encode() if lmk_id else b"")
    )


def parse_ex(response: bytes) -> bytes:
    body = _success(response, b"EX")
    length = int(body[:4])
    return body[4 : 4 + length]


def ey_request(signature: bytes, data: bytes, public_key: bytes, hash_id: str = "06", auth: bytes = b"",
               *, lmk_id: str | None = None) -> bytes:
    """EY: ``public_key`` is what :func:`parse_ep` returned (MAC + DER, or the key block)."""
    return (
        f"EY{hash_id}0101{len(signature):04d}".encode() + signature + b";"
        + f"{len(data):04d}".encode() + data + b";" + public_key + auth
        + (f"%{lmk_id}".encode() if lmk_id else b"")
    )
