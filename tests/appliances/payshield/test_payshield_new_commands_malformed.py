"""Malformed requests to the newer commands get the manual's field error codes, never an internal
error (41): every truncation of a valid request and a request with trailing junk are refused."""

from __future__ import annotations

import psec
import pytest
from psec import des, pinblock

from payshield_inprocess import Host, pin_under_variant_lmk, under_variant_lmk

K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
ZPK = bytes.fromhex("5151515151515151A1A1A1A1A1A1A1A1")
PAN = "4012345678909"
ACCOUNT = PAN[-13:-1].encode()


def _requests() -> dict[str, bytes]:
    pvk = under_variant_lmk(K, "002").encode()
    zpk = under_variant_lmk(ZPK, "001").encode()
    bdk = under_variant_lmk(K, "009").encode()
    mk = under_variant_lmk(K, "109").encode()
    cvc3 = under_variant_lmk(K, "709").encode()
    block = des.encrypt_tdes_ecb(ZPK, pinblock.encode_pinblock_iso_0("1234", PAN)).hex().upper().encode()
    lmk_pin = pin_under_variant_lmk("1234", ACCOUNT.decode()).encode()
    ibm = ACCOUNT + b"0123456789012345" + ACCOUNT
    offset = psec.pin.generate_ibm3624_offset(K, "0123456789012345", "1234", ACCOUNT.decode(), 0, 12, "F")
    offset_field = offset.ljust(12, "F").encode()
    pvv = psec.pin.generate_visa_pvv(K, "1", "1234", PAN).encode()
    ksn, dukpt_block = b"FFFF9876543210E00001", b"1B9C1845EB993A7A"
    message = b"message"
    return {
        "EE": b"EE" + pvk + offset_field + b"04" + ibm,
        "DE": b"DE" + pvk + lmk_pin + b"04" + ibm,
        "BK": b"BK001" + zpk + pvk + block + b"01" + b"04" + ibm,
        "BE": b"BE" + zpk + block + b"01" + ACCOUNT + lmk_pin,
        "CU": b"CU001" + zpk + pvk + block + b"01" + ACCOUNT + b"1" + pvv + block,
        "DU": b"DU001" + zpk + pvk + b"12" + block + b"01" + b"04" + ibm + offset_field + block,
        "CI": b"CI" + bdk + zpk + b"605" + ksn + dukpt_block + b"01" + ACCOUNT,
        "G0": b"G0" + bdk + zpk + b"605" + ksn + dukpt_block + b"0101" + ACCOUNT,
        "CK": b"CK" + bdk + pvk + b"605" + ksn + dukpt_block + b"04" + ibm + offset_field,
        "CM": b"CM" + bdk + pvk + b"605" + ksn + dukpt_block + ACCOUNT + b"1" + pvv,
        "GQ": b"GQ0" + bdk + pvk + b"605" + ksn + dukpt_block + b"01" + ACCOUNT + b"1" + pvv,
        "GW": b"GW0" + bdk + b"605" + ksn + b"%04X" % len(message) + message,
        "KW": b"KW2" + b"1" + mk + b"08" + bytes.fromhex("1234567890123456") + b"\x00\x01" + b"00" + b";"
              + bytes(8) + b"00",
        "PM": b"PM12" + cvc3 + b"A" + b"5123456789012345;00" + b"005" + b"5123D" + b"00000899" + b"00094"
              + b"XX123",
        "JA": b"JA" + ACCOUNT + b"05",
        "PM0": b"PM00" + cvc3 + b"A" + b"4761739001010010;00" + b"2212" + b"0042" + b"123",
    }


REQUESTS = _requests()


@pytest.fixture(scope="module")
def hsm() -> Host:
    return Host()


@pytest.mark.parametrize("command", sorted(REQUESTS))
def test_truncated_and_padded_requests_are_refused_with_field_errors(hsm, command):
    request = REQUESTS[command]
    complete = hsm.call(request)
    assert complete[2:4] in (b"00", b"01"), complete  # the request itself is well formed
    for cut in range(2, len(request)):
        code = hsm.error(request[:cut])
        assert code != "41", (cut, request[:cut])
        if command != "JA" or cut not in (14,):  # JA without its optional PIN length is valid
            assert code != "00", (cut, request[:cut])
    assert hsm.error(request + b"Z") == "15"
