"""GM (hash a block of data), N0 (random value) and FY (ECC key pair).

Hashes are checked against hashlib and the payShield manual's own GM example; ECC public keys
are loaded and checked by ``cryptography``.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from rsa_helpers import Hsm


@pytest.fixture(scope="module")
def hsm() -> Hsm:
    return Hsm()


def test_gm_matches_the_manuals_example(hsm):
    # payShield host command reference, GM example: GM 01 00006 <606162636465>
    response = hsm.call(b"GM0100006" + bytes.fromhex("606162636465"))
    assert response == b"GN00" + bytes.fromhex("A4F684537A7BBE842019F7FC13C882F1B1F9AC3B")


@pytest.mark.parametrize(
    ("identifier", "name"),
    [("01", "sha1"), ("02", "md5"), ("05", "sha224"), ("06", "sha256"), ("07", "sha384"), ("08", "sha512")],
)
def test_gm_hashes_like_hashlib(hsm, identifier, name):
    data = bytes(range(256)) * 3 + b";%\x19 binary data may contain delimiters"
    response = hsm.call(f"GM{identifier}{len(data):05d}".encode() + data)
    assert response == b"GN00" + hashlib.new(name, data).digest()


def test_gm_of_empty_data_and_with_a_trailer(hsm):
    assert hsm.call(b"GM0600000") == b"GN00" + hashlib.sha256(b"").digest()
    assert hsm.call(b"GM0600003abc\x19TRAILER") == b"GN00" + hashlib.sha256(b"abc").digest() + b"\x19TRAILER"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"GM0900003abc", b"GN05"),  # unknown hash identifier
        (b"GM0400003abc", b"GN05"),  # "no hash" is for EW/EY, not GM
        (b"GM0300003abc", b"GN05"),  # ISO 10118-2 is not offered
        (b"GM0600009abc", b"GN80"),  # data shorter than its length
        (b"GM06000x3abc", b"GN15"),  # length not decimal
        (b"GM0600003abcdef", b"GN15"),  # data after the message
    ],
)
def test_gm_errors(hsm, message, expected):
    assert hsm.call(message) == expected


def test_n0_returns_the_number_of_random_bytes_asked_for(hsm):
    first, second = hsm.call(b"N0008"), hsm.call(b"N0008")
    assert first[:4] == b"N100" and len(first) == 4 + 8
    assert first != second
    assert len(hsm.call(b"N0999")) == 4 + 999
    assert hsm.call(b"N0000") == b"N101"
    assert hsm.call(b"N00x8") == b"N115"
    assert hsm.call(b"N00081") == b"N115"


@pytest.mark.parametrize(("curve_code", "curve"), [("00", ec.SECP256R1), ("01", ec.SECP384R1), ("02", ec.SECP521R1)])
def test_fy_generates_an_ecc_key_pair_under_the_key_block_lmk(hsm, curve_code, curve):
    response = hsm.call(f"FY01{curve_code}03%01#S00N00".encode())
    assert response[:4] == b"FZ00", response[:4]
    length = int(response[4:8])
    public = load_der_public_key(response[8 : 8 + length])
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, curve)
    private = response[8 + length :].decode()
    assert private.startswith("S1") and int(private[2:6]) == len(private) - 1
    assert (private[6:8], private[8], private[9], private[12]) == ("03", "E", "S", "N")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"FY010003#S00N00", b"FZA1"),  # ECC keys live in key blocks: variant LMK refused
        (b"FY010003%01", b"FZ15"),  # the '#' fields are required
        (b"FY010903%01#S00N00", b"FZ15"),  # curve
        (b"FY010001%01#S00N00", b"FZ03"),  # public key encoding
        (b"FY020003%01#S00N00", b"FZ15"),  # key type
        (b"FY010003%01#D00N00", b"FZA8"),  # mode of use
        (b"FY010003%01#S00Q00", b"FZ15"),  # exportability
        (b"FY010003%01#S00N01", b"FZ15"),  # optional blocks
    ],
)
def test_fy_errors(hsm, message, expected):
    assert hsm.call(message) == expected
