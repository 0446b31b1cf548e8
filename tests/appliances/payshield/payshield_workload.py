"""A payment application's traffic: one valid request per host command, with its expected answer.

``Workload.exchange(code)`` builds a fresh request for host command ``code`` from random PINs,
accounts, data and keys, and a ``check`` that asserts the response against values computed by
:mod:`payshield_oracle` (psec, pyemv, cryptography, hashlib) — never by the appliance. The soak
client mixes these over many connections; the property tests mutate them.

The appliance must hold ``material`` (default: the Thales test LMK) as the variant LMK in slot
00 and ``keyblock_key`` as the AES key-block LMK in slot 01, both authorised (A4, GG, EI, EO
need the authorised state). Keys are put under the LMKs by the oracle's own implementation of
the documented layouts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import psec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from psec import des
from pyemv import ac, cvn, kd

import payshield_oracle as o
import re

from payshield_helpers import SERIAL, TEST_LMK
from rsa_helpers import load_pkcs1_public_key

PIN_FORMATS = ("01", "05", "34", "47")
TABLE = "0123456789012345"
X924_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
AES_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
#: X9.24-3-2017 AES DUKPT vectors: counter -> (PIN key, MAC generation key or None).
AES_DUKPT = {1: ("AF8CB133A78F8DC2D1359F18527593FB", "A2DC23DE6FDE0824A2BC321E08E4B8B7"),
             2: ("D30BDC73EC9714B000BEC66BDB7B6D09", None)}
RSA_BITS = 1024  # the smallest cryptography generates: keeps the mix cheap


@dataclass
class Exchange:
    """One request and the assertion its response must pass (the response without header)."""

    command: str
    request: bytes
    check: Callable[[bytes], None]
    keys: tuple[bytes, ...] = field(default=())  # key fields inside the request, for mutations
    lmk_id: str | None = None  # the %nn the request names, if any


def _reply(code: str) -> bytes:
    return (code[0] + chr(ord(code[1]) + 1)).encode()


def expect(code: str, data: bytes | str | None = None, error: str = "00") -> Callable[[bytes], None]:
    """A check for an exact response: reply code, error code and (if given) the data."""
    head = _reply(code) + error.encode()

    def check(response: bytes) -> None:
        assert response[:4] == head, (code, response[:40])
        if data is not None:
            expected = data.encode("latin-1") if isinstance(data, str) else data
            assert response[4:] == expected, (code, response[4:80], expected[:76])

    return check


def body(code: str, response: bytes, error: str = "00") -> str:
    assert response[:4] == _reply(code) + error.encode(), (code, response[:40])
    return response[4:].decode("latin-1")


class Workload:
    def __init__(self, rng: random.Random, keyblock_key: bytes, material: bytes = TEST_LMK) -> None:
        self.rng = rng
        self.material = material
        self.kb = keyblock_key

        def key(length: int = 16) -> bytes:
            return des.adjust_key_parity(rng.randbytes(length))

        self.clear = {name: key() for name in ("ZMK", "TPK", "ZPK", "ZPK2", "PVK", "CVK", "TAK", "ZAK", "DEK",
                                               "ZEK", "MK", "CVC3")}
        self.clear["BDK"] = X924_BDK
        types = {"ZMK": "000", "TPK": "002", "ZPK": "001", "ZPK2": "001", "PVK": "002", "CVK": "402",
                 "TAK": "003", "ZAK": "008", "DEK": "00B", "ZEK": "00A", "MK": "109", "CVC3": "709", "BDK": "009"}
        self.field = {name: o.under_variant_lmk(self.clear[name], t, material).encode() for name, t in types.items()}
        self.aes_mac_key = rng.randbytes(32)
        self.kb_field = {
            "CMAC": o.under_keyblock_lmk(keyblock_key, self.aes_mac_key, "M6", "A", "C").encode(),
            "AES_BDK": o.under_keyblock_lmk(keyblock_key, AES_BDK, "B0", "A", "X").encode(),
            "ZPK": o.under_keyblock_lmk(keyblock_key, self.clear["ZPK"], "72", "T", "B").encode(),
            "CVK": o.under_keyblock_lmk(keyblock_key, self.clear["CVK"], "13", "T", "C").encode(),
        }
        # An RSA key pair of the HSM's (private key under the variant LMK, as EI would give it) and
        # one of an outside party (public key MAC'd by the oracle, as EO would give it).
        self.hsm_rsa = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        self.hsm_private_field = self._private_under_lmk(self.hsm_rsa, "N")
        self.outside_rsa = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        der = o.pkcs1_public_der(self.outside_rsa.public_key())
        self.outside_public = o.public_key_mac(material, der) + der

    def _private_under_lmk(self, key: rsa.RSAPrivateKey, mode: str) -> bytes:
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        clear = mode.encode() + b"R" + hashlib.sha256(der).digest()[:8] + der + b"\x80"
        clear += bytes(-len(clear) % 8)
        cryptogram = des.encrypt_tdes_cbc(self.material[17 * 16 : 18 * 16], bytes(8), clear)
        return f"{len(cryptogram):04d}".encode() + cryptogram

    # -- random inputs -------------------------------------------------------------------------

    def pin(self, low: int = 4, high: int = 12) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(self.rng.randint(low, high)))

    def account(self) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(12))

    def pan(self, length: int = 16) -> str:
        return "4" + "".join(self.rng.choice("0123456789") for _ in range(length - 1))

    def block(self, key: str, fmt: str, pin: str, account: str) -> bytes:
        return o.encrypted_pin_block(self.clear[key], fmt, pin, account).encode()

    @property
    def commands(self) -> list[str]:
        return sorted(name[3:].upper() for name in dir(self) if name.startswith("ex_"))

    def exchange(self, code: str) -> Exchange:
        return getattr(self, "ex_" + code.lower())()

    def _ex(self, code: str, request: bytes, check, *keys: bytes, lmk_id: str | None = None) -> Exchange:
        return Exchange(command=code, request=request, check=check, keys=tuple(keys), lmk_id=lmk_id)

    # -- diagnostics ---------------------------------------------------------------------------

    def ex_nc(self) -> Exchange:
        if self.rng.random() < 0.5:
            return self._ex("NC", b"NC", expect("NC", o.variant_lmk_check_value(self.material) + o.FIRMWARE_NUMBER))
        return self._ex("NC", b"NC%01", expect("NC", o.keyblock_lmk_check_value(self.kb) + o.FIRMWARE_NUMBER),
                        lmk_id="01")

    def ex_no(self) -> Exchange:
        if self.rng.random() < 0.5:
            return self._ex("NO", b"NO00", expect("NO", "3" + "1" + "0064" + o.FIRMWARE_NUMBER + "00000"))
        return self._ex("NO", b"NO01", expect("NO", "1"))

    def ex_b2(self) -> Exchange:
        data = self.rng.randbytes(self.rng.randint(1, 200))
        return self._ex("B2", b"B2" + b"%04X" % len(data) + data, expect("B2", data))

    # -- keys ----------------------------------------------------------------------------------

    def _check_generated(self, key_type: str, length: int, under_zmk_scheme: str | None = None):
        def check(response: bytes) -> None:
            data = body("A0", response)
            field_length = 1 + length * 2
            under_lmk = data[:field_length]
            clear = o.from_variant_lmk(under_lmk, key_type, self.material)
            assert o.odd_parity(clear) and len(clear) == length
            rest = data[field_length:]
            if under_zmk_scheme is not None:
                zmk_field, rest = rest[:field_length], rest[field_length:]
                assert o.from_zmk(self.clear["ZMK"], zmk_field) == clear
            assert rest == o.kcv(clear)

        return check

    def ex_a0(self) -> Exchange:
        choice = self.rng.randrange(3)
        key_type = self.rng.choice(("000", "001", "002", "003", "008", "00B", "402", "109"))
        if choice == 0:
            scheme, length = self.rng.choice((("U", 16), ("T", 24)))
            return self._ex("A0", f"A00{key_type}{scheme}".encode(), self._check_generated(key_type, length))
        if choice == 1:
            return self._ex("A0", f"A01{key_type}U".encode() + self.field["ZMK"] + b"X",
                            self._check_generated(key_type, 16, "X"), self.field["ZMK"])

        def check(response: bytes) -> None:
            data = body("A0", response)
            header, clear = o.from_keyblock_lmk(self.kb, data[:-6])
            assert header.key_usage == "P0" and header.algorithm == "T" and header.mode_of_use == "N"
            assert len(clear) == 16 and data[-6:] == o.kcv(clear)

        return self._ex("A0", b"A00FFFS#P0T2N00E00%01", check, lmk_id="01")

    def _components(self, count: int, key_type: str) -> tuple[list[bytes], list[bytes]]:
        clears = [des.adjust_key_parity(self.rng.randbytes(16)) for _ in range(count)]
        return clears, [o.under_variant_lmk(c, key_type, self.material).encode() for c in clears]

    def _check_formed(self, code: str, clears: list[bytes], key_type: str):
        value = clears[0]
        for c in clears[1:]:
            value = bytes(a ^ b for a, b in zip(value, c))
        value = des.adjust_key_parity(value)
        return expect(code, o.under_variant_lmk(value, key_type, self.material) + o.kcv(value))

    def ex_a4(self) -> Exchange:
        count = self.rng.randint(2, 4)
        key_type = self.rng.choice(("000", "001", "002"))
        clears, fields = self._components(count, key_type)
        return self._ex("A4", f"A4{count}{key_type}U".encode() + b"".join(fields),
                        self._check_formed("A4", clears, key_type), *fields)

    def ex_gg(self) -> Exchange:
        clears, fields = self._components(3, "000")
        return self._ex("GG", b"GG" + b"".join(fields), self._check_formed("GG", clears, "000"), *fields)

    def ex_a6(self) -> Exchange:
        key = des.adjust_key_parity(self.rng.randbytes(16))
        scheme = self.rng.choice("XU")
        under_zmk = o.under_zmk(self.clear["ZMK"], key, scheme).encode()
        return self._ex("A6", b"A6001" + self.field["ZMK"] + under_zmk + b"U",
                        expect("A6", o.under_variant_lmk(key, "001", self.material) + o.kcv(key)), self.field["ZMK"])

    def ex_a8(self) -> Exchange:
        scheme = self.rng.choice("XUR")
        request = b"A8001" + self.field["ZMK"] + self.field["ZPK"] + scheme.encode()
        if scheme != "R":
            return self._ex("A8", request, expect("A8", o.under_zmk(self.clear["ZMK"], self.clear["ZPK"], scheme)
                                                  + o.kcv(self.clear["ZPK"])), self.field["ZMK"], self.field["ZPK"])

        def check(response: bytes) -> None:
            data = body("A8", response)
            header, clear = psec.tr31.unwrap(self.clear["ZMK"], data[1:-6])
            assert data[0] == "R" and clear == self.clear["ZPK"] and header.key_usage == "P0"
            assert data[-6:] == o.kcv(clear)

        return self._ex("A8", request, check, self.field["ZMK"], self.field["ZPK"])

    def ex_bu(self) -> Exchange:
        name, code = self.rng.choice((("ZMK", "00"), ("ZPK", "01"), ("TAK", "03"), ("BDK", "09")))
        if self.rng.random() < 0.5:
            return self._ex("BU", f"BU{code}1".encode() + self.field[name], expect("BU", o.kcv(self.clear[name])),
                            self.field[name])
        return self._ex("BU", b"BUFF1" + self.field[name] + f";0{code};0".encode(),
                        expect("BU", o.kcv(self.clear[name], 8)), self.field[name])

    # -- PIN translation -----------------------------------------------------------------------

    def _translate(self, code: str, source: str, dest: str) -> Exchange:
        pin, account = self.pin(), self.account()
        src_fmt, dst_fmt = self.rng.choice(PIN_FORMATS), self.rng.choice(PIN_FORMATS)
        request = (code.encode() + self.field[source] + self.field[dest] + b"12"
                   + self.block(source, src_fmt, pin, account) + f"{src_fmt}{dst_fmt}{account}".encode())

        def check(response: bytes) -> None:
            data = body(code, response)
            assert data[:2] == f"{len(pin):02d}" and data[18:] == dst_fmt
            assert o.pin_of_block(self.clear[dest], data[2:18], dst_fmt, account) == pin

        return self._ex(code, request, check, self.field[source], self.field[dest])

    def ex_ca(self) -> Exchange:
        return self._translate("CA", "TPK", "ZPK")

    def ex_cc(self) -> Exchange:
        return self._translate("CC", "ZPK", "ZPK2")

    def ex_ja(self) -> Exchange:
        account, length = self.account(), self.rng.randint(4, 12)

        def check(response: bytes) -> None:
            pin = o.pin_from_variant_lmk(body("JA", response), account, self.material)
            assert len(pin) == length and pin.isdigit()

        if self.rng.random() < 0.3:  # the whole PAN ended by ';': bound to the 12 digits before its check digit
            pan = self.pan(self.rng.randint(13, 19))
            account = pan[-13:-1]
            return self._ex("JA", f"JA{pan};{length:02d}".encode(), check)
        return self._ex("JA", f"JA{account}{length:02d}".encode(), check)

    def _to_lmk(self, code: str, key: str) -> Exchange:
        pin, account, fmt = self.pin(), self.account(), self.rng.choice(PIN_FORMATS)
        return self._ex(code, code.encode() + self.field[key] + self.block(key, fmt, pin, account)
                        + f"{fmt}{account}".encode(),
                        expect(code, o.pin_under_variant_lmk(pin, account, self.material)), self.field[key])

    def ex_jc(self) -> Exchange:
        return self._to_lmk("JC", "TPK")

    def ex_je(self) -> Exchange:
        return self._to_lmk("JE", "ZPK")

    def ex_jg(self) -> Exchange:
        pin, account, fmt = self.pin(), self.account(), self.rng.choice(PIN_FORMATS)
        request = (b"JG" + self.field["ZPK"] + f"{fmt}{account}".encode()
                   + o.pin_under_variant_lmk(pin, account, self.material).encode())

        def check(response: bytes) -> None:
            assert o.pin_of_block(self.clear["ZPK"], body("JG", response), fmt, account) == pin

        return self._ex("JG", request, check, self.field["ZPK"])

    # -- PIN verification ----------------------------------------------------------------------

    def _ibm_case(self) -> tuple[str, str, str, str, int, str, bool]:
        """pin, account, validation field, validation data, check length, offset field, verifies."""
        pin, account = self.pin(), self.account()
        check_length = self.rng.randint(4, len(pin))
        validation_field = account[:11] + "N" if self.rng.random() < 0.5 else account
        validation = o.ibm_validation(validation_field, account)
        natural_offset_pin = pin if self.rng.random() < 0.7 else self.pin(len(pin), len(pin))
        offset = o.ibm_offset(self.clear["PVK"], TABLE, natural_offset_pin, validation, check_length)
        verifies = o.ibm_verifies(self.clear["PVK"], TABLE, pin, validation, offset, check_length)
        return pin, account, validation_field, validation, check_length, offset, verifies

    def _verify_ibm(self, code: str, key: str) -> Exchange:
        pin, account, vfield, _, check_length, offset, verifies = self._ibm_case()
        fmt = self.rng.choice(PIN_FORMATS)
        request = (code.encode() + self.field[key] + self.field["PVK"] + b"12" + self.block(key, fmt, pin, account)
                   + f"{fmt}{check_length:02d}{account}{TABLE}{vfield}{offset}".encode())
        return self._ex(code, request, expect(code, "", "00" if verifies else "01"), self.field[key], self.field["PVK"])

    def ex_da(self) -> Exchange:
        return self._verify_ibm("DA", "TPK")

    def ex_ea(self) -> Exchange:
        return self._verify_ibm("EA", "ZPK")

    def _pvv_case(self) -> tuple[str, str, str, str, bool]:
        pin, account, pvki = self.pin(4, 12), self.account(), str(self.rng.randint(0, 6))
        good = o.pvv(self.clear["PVK"], pvki, pin, account)
        given = good if self.rng.random() < 0.7 else f"{(int(good) + 1) % 10000:04d}"
        return pin, account, pvki, given, given == good

    def _verify_pvv(self, code: str, key: str) -> Exchange:
        pin, account, pvki, given, good = self._pvv_case()
        fmt = self.rng.choice(PIN_FORMATS)
        request = (code.encode() + self.field[key] + self.field["PVK"] + self.block(key, fmt, pin, account)
                   + f"{fmt}{account}{pvki}{given}".encode())
        return self._ex(code, request, expect(code, "", "00" if good else "01"), self.field[key], self.field["PVK"])

    def ex_dc(self) -> Exchange:
        return self._verify_pvv("DC", "TPK")

    def ex_ec(self) -> Exchange:
        return self._verify_pvv("EC", "ZPK")

    def ex_dg(self) -> Exchange:
        pin, account, pvki = self.pin(), self.account(), str(self.rng.randint(0, 6))
        request = (b"DG" + self.field["PVK"] + o.pin_under_variant_lmk(pin, account, self.material).encode()
                   + f"{account}{pvki}".encode())
        return self._ex("DG", request, expect("DG", o.pvv(self.clear["PVK"], pvki, pin, account)), self.field["PVK"])

    def ex_fw(self) -> Exchange:
        key_type, key = self.rng.choice((("001", "ZPK"), ("002", "TPK")))
        pin, account, pvki, fmt = self.pin(), self.account(), str(self.rng.randint(0, 6)), self.rng.choice(PIN_FORMATS)
        request = (b"FW" + key_type.encode() + self.field[key] + self.field["PVK"] + self.block(key, fmt, pin, account)
                   + f"{fmt}{account}{pvki}".encode())
        return self._ex("FW", request, expect("FW", o.pvv(self.clear["PVK"], pvki, pin, account)),
                        self.field[key], self.field["PVK"])

    # -- card verification ---------------------------------------------------------------------

    def _card(self) -> tuple[str, str, str]:
        return (self.pan(self.rng.choice((13, 16, 19))), f"{self.rng.randint(1, 12):02d}{self.rng.randint(0, 99):02d}",
                f"{self.rng.randint(0, 999):03d}")

    def ex_cw(self) -> Exchange:
        pan, expiry, service = self._card()
        expected = o.cvv(self.clear["CVK"], pan, expiry, service)
        if self.rng.random() < 0.3:
            return self._ex("CW", b"CW" + self.kb_field["CVK"] + f"{pan};{expiry}{service}%01".encode(),
                            expect("CW", expected), self.kb_field["CVK"], lmk_id="01")
        return self._ex("CW", b"CW" + self.field["CVK"] + f"{pan};{expiry}{service}".encode(), expect("CW", expected),
                        self.field["CVK"])

    def ex_cy(self) -> Exchange:
        pan, expiry, service = self._card()
        good = o.cvv(self.clear["CVK"], pan, expiry, service)
        given = good if self.rng.random() < 0.7 else f"{(int(good) + 1) % 1000:03d}"
        return self._ex("CY", b"CY" + self.field["CVK"] + f"{given}{pan};{expiry}{service}".encode(),
                        expect("CY", "", "00" if given == good else "01"), self.field["CVK"])

    # -- data encryption and MACs --------------------------------------------------------------

    def _crypt(self, code: str) -> Exchange:
        encrypt = code == "M0"
        key_type, name = self.rng.choice((("00B", "DEK"), ("00A", "ZEK")))
        data = self.rng.randbytes(8 * self.rng.randint(1, 16))
        key = self.clear[name]
        if self.rng.random() < 0.5:
            out = o.tdes_ecb(key, data, encrypt=encrypt)
            request = f"{code}0011{key_type}".encode() + self.field[name] + b"%04X" % (len(data) * 2) + data.hex().upper().encode()
            expected = f"{len(out) * 2:04X}" + out.hex().upper()
        else:
            iv = self.rng.randbytes(8)
            out = o.tdes_cbc(key, iv, data, encrypt=encrypt)
            request = (f"{code}0111{key_type}".encode() + self.field[name] + iv.hex().upper().encode()
                       + b"%04X" % (len(data) * 2) + data.hex().upper().encode())
            next_iv = (out if encrypt else data)[-8:]
            expected = next_iv.hex().upper() + f"{len(out) * 2:04X}" + out.hex().upper()
        return self._ex(code, request, expect(code, expected), self.field[name])

    def ex_m0(self) -> Exchange:
        return self._crypt("M0")

    def ex_m2(self) -> Exchange:
        return self._crypt("M2")

    def _mac_case(self) -> tuple[bytes, bytes, str, bytes]:
        """(request head up to the data, data, expected MAC, key field)."""
        data = self.rng.randbytes(self.rng.randint(1, 300))
        if self.rng.random() < 0.25:
            size = self.rng.choice("01")
            mac = o.mac(self.aes_mac_key, data, "6", "0", size, aes=True)
            head = f"1{size}61FFF".encode() + self.kb_field["CMAC"]
            return head, data, mac, self.kb_field["CMAC"]
        algorithm, pad, size = self.rng.choice("13"), self.rng.choice("123"), self.rng.choice("01")
        key_type, name = self.rng.choice((("003", "TAK"), ("008", "ZAK")))
        mac = o.mac(self.clear[name], data, algorithm, pad, size)
        return f"1{size}{algorithm}{pad}{key_type}".encode() + self.field[name], data, mac, self.field[name]

    def ex_m6(self) -> Exchange:
        head, data, mac, key = self._mac_case()
        lmk = b"%01" if key.startswith(b"S") else b""
        request = b"M60" + head + b"%04X" % (len(data) * 2) + data.hex().upper().encode() + lmk
        return self._ex("M6", request, expect("M6", mac), key, lmk_id="01" if lmk else None)

    def ex_m8(self) -> Exchange:
        head, data, mac, key = self._mac_case()
        good = self.rng.random() < 0.7
        given = mac if good else ("0" if mac[0] != "0" else "1") + mac[1:]
        lmk = b"%01" if key.startswith(b"S") else b""
        request = b"M80" + head + b"%04X" % (len(data) * 2) + data.hex().upper().encode() + given.encode() + lmk
        return self._ex("M8", request, expect("M8", "", "00" if good else "01"), key, lmk_id="01" if lmk else None)

    # -- EMV -----------------------------------------------------------------------------------

    def ex_kq(self) -> Exchange:
        pan, psn = self.pan(16), f"{self.rng.randint(0, 99):02d}"
        pan_psn = bytes.fromhex((pan + psn)[-16:])
        atc, un = self.rng.randbytes(2), self.rng.randbytes(4)
        tx = self.rng.randbytes(self.rng.randint(8, 64))
        mode, scheme = self.rng.choice("012"), self.rng.choice("012")
        sk, pad = o.kq_session_key(self.clear["MK"], pan, psn, scheme, atc, un)
        arqc = ac.generate_ac(sk, tx, pad)
        arc = self.rng.randbytes(2)
        request = (b"KQ" + mode.encode() + scheme.encode() + self.field["MK"] + pan_psn + atc + un + b"%02X" % len(tx)
                   + tx + b";" + arqc + (arc if mode in "12" else b""))
        return self._ex("KQ", request, expect("KQ", ac.generate_arpc_1(sk, arqc, arc) if mode in "12" else b""),
                        self.field["MK"])

    def ex_kw(self) -> Exchange:
        pan, psn = self.pan(16), f"{self.rng.randint(0, 99):02d}"
        atc = self.rng.randbytes(2)
        tags = dict(
            tag_9f02=bytes.fromhex(f"{self.rng.randint(1, 999999):012d}"), tag_9f03=bytes(6),
            tag_9f1a=bytes.fromhex("0840"), tag_95=self.rng.randbytes(5), tag_5f2a=bytes.fromhex("0978"),
            tag_9a=bytes.fromhex("261202"), tag_9c=b"\x00", tag_9f37=self.rng.randbytes(4),
            tag_82=bytes.fromhex("1800"), tag_9f36=atc,
        )
        other = bytes(16)
        packed = bytes.fromhex(pan + psn)
        head = b"%02d" % len(packed) + packed + atc
        if self.rng.random() < 0.5:  # Visa CVN 18: common session key, ARPC method 2
            iad = bytes.fromhex("06011203A0B800")
            card = cvn.VisaCVN18(self.clear["MK"], other, other, pan, psn)
            arqc = card.generate_ac(**tags, tag_9f10=iad)
            tx = b"".join(tags.values()) + iad
            csu = self.rng.randbytes(4)
            request = b"KW31" + self.field["MK"] + head + b"%02X" % len(tx) + tx + b";" + arqc + csu + b"0"
            return self._ex("KW", request, expect("KW", card.generate_arpc(arqc, atc, csu)), self.field["MK"])
        card = cvn.VisaCVN10(self.clear["MK"], other, other, pan, psn)  # ICC MK, Visa padding, method 1
        cvr = bytes.fromhex("03A0B800")
        arqc = card.generate_ac(**tags, cvr=cvr)
        tx = b"".join(tags.values()) + cvr
        arc = b"00"
        request = b"KW10" + self.field["MK"] + head + b"%02X" % len(tx) + tx + b";" + arqc + arc
        return self._ex("KW", request, expect("KW", card.generate_arpc(arqc, arc)), self.field["MK"])

    def ex_pm(self) -> Exchange:
        pan, psn = self.pan(16), f"{self.rng.randint(0, 99):02d}"
        expiry, atc = f"{self.rng.randint(1, 12):02d}{self.rng.randint(20, 40):02d}", f"{self.rng.randint(0, 9999):04d}"
        udk = kd.derive_icc_mk_a(self.clear["CVC3"], pan, psn)
        good = psec.cvv.generate_cvv(udk, atc + pan[4:], expiry, "000")
        given = good if self.rng.random() < 0.7 else f"{(int(good) + 1) % 1000:03d}"
        request = b"PM00" + self.field["CVC3"] + f"A{pan};{psn}{expiry}{atc}{given}".encode()
        return self._ex("PM", request, expect("PM", "", "00" if given == good else "01"), self.field["CVC3"])

    # -- PIN issuing ---------------------------------------------------------------------------

    def ex_ee(self) -> Exchange:
        account = self.account()
        check_length = self.rng.randint(4, 12)
        offset = "".join(self.rng.choice("0123456789") for _ in range(check_length))
        vfield = account
        expected = o.ibm_pin(self.clear["PVK"], TABLE, offset, vfield)
        request = (b"EE" + self.field["PVK"] + offset.ljust(12, "F").encode()
                   + f"{check_length:02d}{account}{TABLE}{vfield}".encode())
        return self._ex("EE", request, expect("EE", o.pin_under_variant_lmk(expected, account, self.material)),
                        self.field["PVK"])

    def ex_de(self) -> Exchange:
        pin, account = self.pin(), self.account()
        check_length = self.rng.randint(4, len(pin))
        vfield = account[:11] + "N"
        validation = o.ibm_validation(vfield, account)
        request = (b"DE" + self.field["PVK"] + o.pin_under_variant_lmk(pin, account, self.material).encode()
                   + f"{check_length:02d}{account}{TABLE}{vfield}".encode())
        return self._ex("DE", request, expect("DE", o.ibm_offset(self.clear["PVK"], TABLE, pin, validation, check_length)),
                        self.field["PVK"])

    def ex_bk(self) -> Exchange:
        key_type, key = self.rng.choice((("001", "ZPK"), ("002", "TPK")))
        pin, account, fmt = self.pin(), self.account(), self.rng.choice(PIN_FORMATS)
        check_length = self.rng.randint(4, len(pin))
        request = (b"BK" + key_type.encode() + self.field[key] + self.field["PVK"] + self.block(key, fmt, pin, account)
                   + f"{fmt}{check_length:02d}{account}{TABLE}{account}".encode())
        return self._ex("BK", request, expect("BK", o.ibm_offset(self.clear["PVK"], TABLE, pin, account, check_length)),
                        self.field[key], self.field["PVK"])

    def _compare(self, code: str, key: str) -> Exchange:
        pin, account, fmt = self.pin(), self.account(), self.rng.choice(PIN_FORMATS)
        stored = pin if self.rng.random() < 0.7 else self.pin()
        request = (code.encode() + self.field[key] + self.block(key, fmt, pin, account) + f"{fmt}{account}".encode()
                   + o.pin_under_variant_lmk(stored, account, self.material).encode())
        return self._ex(code, request, expect(code, "", "00" if stored == pin else "01"), self.field[key])

    def ex_bc(self) -> Exchange:
        return self._compare("BC", "TPK")

    def ex_be(self) -> Exchange:
        return self._compare("BE", "ZPK")

    def ex_cu(self) -> Exchange:
        key_type, key = self.rng.choice((("001", "ZPK"), ("002", "TPK")))
        pin, account, pvki, given, good = self._pvv_case()
        new_pin, fmt = self.pin(), self.rng.choice(PIN_FORMATS)
        request = (b"CU" + key_type.encode() + self.field[key] + self.field["PVK"] + self.block(key, fmt, pin, account)
                   + f"{fmt}{account}{pvki}{given}".encode() + self.block(key, fmt, new_pin, account))
        check = expect("CU", o.pvv(self.clear["PVK"], pvki, new_pin, account)) if good else expect("CU", "", "01")
        return self._ex("CU", request, check, self.field[key], self.field["PVK"])

    def ex_du(self) -> Exchange:
        key_type, key = self.rng.choice((("001", "ZPK"), ("002", "TPK")))
        pin, account, vfield, validation, check_length, offset, verifies = self._ibm_case()
        new_pin, fmt = self.pin(check_length, 12), self.rng.choice(PIN_FORMATS)
        request = (b"DU" + key_type.encode() + self.field[key] + self.field["PVK"] + b"12"
                   + self.block(key, fmt, pin, account)
                   + f"{fmt}{check_length:02d}{account}{TABLE}{vfield}{offset}".encode()
                   + self.block(key, fmt, new_pin, account))
        check = (expect("DU", o.ibm_offset(self.clear["PVK"], TABLE, new_pin, validation, check_length)) if verifies
                 else expect("DU", "", "01"))
        return self._ex("DU", request, check, self.field[key], self.field["PVK"])

    # -- DUKPT ---------------------------------------------------------------------------------

    def _ksn(self) -> tuple[bytes, bytes]:
        """A TDES KSN (X9.24 device FFFF9876543210E + a counter with at most 10 one bits)."""
        while True:
            counter = self.rng.randint(1, 0x1FFFFF)
            if bin(counter).count("1") <= 10:
                break
        ksn = bytes.fromhex("FFFF9876543210E00000")
        ksn = ksn[:7] + (int.from_bytes(ksn[7:], "big") | counter).to_bytes(3, "big")
        return ksn.hex().upper().encode(), o.dukpt_pin_key(self.clear["BDK"], ksn)

    def _dukpt_block(self, pin_key: bytes, pin: str, account: str) -> bytes:
        return des.encrypt_tdes_ecb(pin_key, o.encode_pin_block("01", pin, account)).hex().upper().encode()

    def _dukpt_translate(self, code: str) -> Exchange:
        if code == "G0" and self.rng.random() < 0.3:
            return self._aes_g0()
        pin, account = self.pin(), self.account()
        ksn, pin_key = self._ksn()
        dst = self.rng.choice(PIN_FORMATS) if code == "G0" else "01"
        request = (code.encode() + self.field["BDK"] + self.field["ZPK"] + b"605" + ksn
                   + self._dukpt_block(pin_key, pin, account) + (b"01" if code == "G0" else b"")
                   + f"{dst}{account}".encode())

        def check(response: bytes) -> None:
            data = body(code, response)
            assert data[:2] == f"{len(pin):02d}" and data[18:] == dst
            assert o.pin_of_block(self.clear["ZPK"], data[2:18], dst, account) == pin

        return self._ex(code, request, check, self.field["BDK"], self.field["ZPK"])

    def _aes_g0(self) -> Exchange:
        counter = self.rng.choice(sorted(AES_DUKPT))
        pan = self.pan(16)
        account, pin = pan[-13:-1], self.pin()
        encrypted = psec.pinblock.encipher_pinblock_iso_4(bytes.fromhex(AES_DUKPT[counter][0]), pin, pan)
        request = (b"G0" + self.kb_field["AES_BDK"] + self.kb_field["ZPK"] + b"A05"
                   + f"1234567890123456{counter:08X}".encode() + encrypted.hex().upper().encode() + b"4801"
                   + account.encode() + b"16" + pan.encode() + b"%01")

        def check(response: bytes) -> None:
            data = body("G0", response)
            assert data[:2] == f"{len(pin):02d}" and data[-2:] == "01"
            assert o.pin_of_block(self.clear["ZPK"], data[2:18], "01", account) == pin

        return self._ex("G0", request, check, self.kb_field["AES_BDK"], self.kb_field["ZPK"], lmk_id="01")

    def ex_ci(self) -> Exchange:
        return self._dukpt_translate("CI")

    def ex_g0(self) -> Exchange:
        return self._dukpt_translate("G0")

    def _dukpt_ibm(self) -> tuple[bytes, bytes, bytes, bool]:
        """(KSN, DUKPT PIN block, IBM tail: check length ... offset, verifies) — ISO 0 blocks."""
        pin, account, vfield, _, check_length, offset, verifies = self._ibm_case()
        ksn, pin_key = self._ksn()
        tail = f"{check_length:02d}{account}{TABLE}{vfield}{offset}".encode()
        return ksn, self._dukpt_block(pin_key, pin, account), tail, verifies

    def ex_ck(self) -> Exchange:
        ksn, block, tail, verifies = self._dukpt_ibm()
        request = b"CK" + self.field["BDK"] + self.field["PVK"] + b"605" + ksn + block + tail
        return self._ex("CK", request, expect("CK", "", "00" if verifies else "01"), self.field["BDK"], self.field["PVK"])

    def _dukpt_pvv(self) -> tuple[bytes, bytes, bytes, bytes, bool]:
        pin, account, pvki, given, good = self._pvv_case()
        ksn, pin_key = self._ksn()
        return ksn, self._dukpt_block(pin_key, pin, account), account.encode(), f"{pvki}{given}".encode(), good

    def ex_cm(self) -> Exchange:
        ksn, block, account, pvv_fields, good = self._dukpt_pvv()
        request = b"CM" + self.field["BDK"] + self.field["PVK"] + b"605" + ksn + block + account + pvv_fields
        return self._ex("CM", request, expect("CM", "", "00" if good else "01"), self.field["BDK"], self.field["PVK"])

    def _dukpt_mac_tail(self, ksn: bytes) -> tuple[bytes, bool]:
        message = self.rng.randbytes(self.rng.randint(1, 120))
        key = o.dukpt_mac_key(self.clear["BDK"], bytes.fromhex(ksn.decode()))
        mac = psec.mac.generate_retail_mac(key[:8], key[8:], message, 1, 4).hex().upper()
        good = self.rng.random() < 0.8
        if not good:
            mac = ("0" if mac[0] != "0" else "1") + mac[1:]
        return mac.encode() + b"%04X" % len(message) + message, good

    def ex_go(self) -> Exchange:
        ksn, block, tail, verifies = self._dukpt_ibm()
        mode = self.rng.choice("01")
        request = b"GO" + mode.encode() + self.field["BDK"] + self.field["PVK"] + b"605" + ksn + block + b"01" + tail
        good = True
        if mode == "1":
            mac_tail, good = self._dukpt_mac_tail(ksn)
            request += mac_tail
        return self._ex("GO", request, expect("GO", "", "00" if verifies and good else "01"),
                        self.field["BDK"], self.field["PVK"])

    def ex_gq(self) -> Exchange:
        ksn, block, account, pvv_fields, verifies = self._dukpt_pvv()
        mode = self.rng.choice("01")
        request = (b"GQ" + mode.encode() + self.field["BDK"] + self.field["PVK"] + b"605" + ksn + block + b"01"
                   + account + pvv_fields)
        good = True
        if mode == "1":
            mac_tail, good = self._dukpt_mac_tail(ksn)
            request += mac_tail
        return self._ex("GQ", request, expect("GQ", "", "00" if verifies and good else "01"),
                        self.field["BDK"], self.field["PVK"])

    def ex_gw(self) -> Exchange:
        ksn, _ = self._ksn()
        message = self.rng.randbytes(self.rng.randint(1, 120))
        raw_ksn = bytes.fromhex(ksn.decode())
        if self.rng.random() < 0.5:
            key = o.dukpt_mac_key(self.clear["BDK"], raw_ksn, response=True)
            mac = psec.mac.generate_retail_mac(key[:8], key[8:], message, 1, 4).hex().upper()
            return self._ex("GW", b"GW0" + self.field["BDK"] + b"605" + ksn + b"%04X" % len(message) + message,
                            expect("GW", mac), self.field["BDK"])
        mac_tail, good = self._dukpt_mac_tail(ksn)
        mac, rest = mac_tail[:8], mac_tail[8:]
        return self._ex("GW", b"GW1" + self.field["BDK"] + b"605" + ksn + rest + mac,
                        expect("GW", "", "00" if good else "01"), self.field["BDK"])

    # -- RSA, hashing, random, ECC -------------------------------------------------------------

    def ex_ei(self) -> Exchange:
        def check(response: bytes) -> None:
            data = response[4:]
            assert response[:4] == b"EJ00", response[:8]
            from hsmcloud.appliances.payshield.commands.rsa_messages import der_length  # DER framing only

            end = der_length(data)
            public = load_pkcs1_public_key(data[:end])
            assert public.key_size == RSA_BITS and public.public_numbers().e == 65537
            private_field = data[end:]
            assert private_field[:4] == b"FFFF"
            header, der = o.from_keyblock_lmk(self.kb, private_field[4:].decode("latin-1"))
            assert (header.key_usage, header.algorithm, header.mode_of_use) == ("03", "R", "N")
            private = serialization.load_der_private_key(der, password=None)
            assert o.pkcs1_public_der(private.public_key()) == data[:end]

        return self._ex("EI", f"EI2{RSA_BITS:04d}02%01#0000&N".encode(), check, lmk_id="01")

    def ex_eo(self) -> Exchange:
        der = o.pkcs1_public_der(self.outside_rsa.public_key())
        auth = self.rng.randbytes(self.rng.randint(0, 8)).hex().encode()
        return self._ex("EO", b"EO02" + der + auth, expect("EO", o.public_key_mac(self.material, der, auth) + der))

    def ex_ew(self) -> Exchange:
        data = self.rng.randbytes(self.rng.randint(1, 500))
        hash_id, algorithm = self.rng.choice((("01", hashes.SHA1()), ("06", hashes.SHA256()), ("08", hashes.SHA512())))
        signature = self.hsm_rsa.sign(data, padding.PKCS1v15(), algorithm)
        request = f"EW{hash_id}0101{len(data):04d}".encode() + data + b";99" + self.hsm_private_field
        return self._ex("EW", request, expect("EW", f"{len(signature):04d}".encode() + signature))

    def ex_ey(self) -> Exchange:
        data = self.rng.randbytes(self.rng.randint(1, 500))
        signature = self.outside_rsa.sign(data, padding.PKCS1v15(), hashes.SHA256())
        good = self.rng.random() < 0.7
        signed = data if good else data + b"!"
        request = (f"EY060101{len(signature):04d}".encode() + signature + b";" + f"{len(signed):04d}".encode()
                   + signed + b";" + self.outside_public)
        return self._ex("EY", request, expect("EY", "", "00" if good else "02"))

    def ex_gi(self) -> Exchange:
        key = des.adjust_key_parity(self.rng.randbytes(16))
        encrypted = self.hsm_rsa.public_key().encrypt(key, padding.PKCS1v15())
        request = (b"GI0101" + b"0600" + f"{len(encrypted):04d}".encode() + encrypted + b";99"
                   + self.hsm_private_field)
        return self._ex("GI", request, expect("GI", o.under_variant_lmk(key, "001", self.material) + o.kcv(key, 8)))

    def ex_gk(self) -> Exchange:
        request = (b"GK0101" + b"06001" + self.field["ZPK"] + o.kcv(self.clear["ZPK"], 8).encode()
                   + self.outside_public)

        def check(response: bytes) -> None:
            data = response[4:]
            assert response[:4] == b"GL00", response[:8]
            encrypted = data[4 : 4 + int(data[:4])]
            assert len(data) == 4 + len(encrypted) == 4 + RSA_BITS // 8
            assert self.outside_rsa.decrypt(encrypted, padding.PKCS1v15()) == self.clear["ZPK"]

        return self._ex("GK", request, check, self.field["ZPK"])

    def ex_gm(self) -> Exchange:
        hash_id, name = self.rng.choice((("01", "sha1"), ("02", "md5"), ("05", "sha224"), ("06", "sha256"),
                                         ("07", "sha384"), ("08", "sha512")))
        data = self.rng.randbytes(self.rng.randint(0, 2000))
        return self._ex("GM", f"GM{hash_id}{len(data):05d}".encode() + data,
                        expect("GM", hashlib.new(name, data).digest()))

    def ex_n0(self) -> Exchange:
        length = self.rng.randint(1, 999)

        def check(response: bytes) -> None:
            assert response[:4] == b"N100" and len(response) == 4 + length, (response[:4], len(response))

        return self._ex("N0", f"N0{length:03d}".encode(), check)

    def ex_fy(self) -> Exchange:
        curve = self.rng.choice("012")
        mode = self.rng.choice("SXN")

        def check(response: bytes) -> None:
            assert response[:4] == b"FZ00", response[:8]
            length = int(response[4:8])
            public_der = response[8 : 8 + length]
            public = load_der_public_key(public_der)
            header, der = o.from_keyblock_lmk(self.kb, response[8 + length :].decode("latin-1"))
            assert (header.key_usage, header.algorithm, header.mode_of_use) == ("03", "E", mode)
            private = serialization.load_der_private_key(der, password=None)
            assert private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == public_der
            assert public.curve.name == ("secp256r1", "secp384r1", "secp521r1")[int(curve)]

        return self._ex("FY", f"FY010{curve}03%01#{mode}00N00".encode(), check, lmk_id="01")

    # -- health and utilisation (answered by the host ports' runtime) --------------------------

    def _health(self, code: str, request: bytes, pattern: str) -> Exchange:
        head = SERIAL[:12].ljust(12) + r"\d{12}" * 3 + r"\d{10}"

        def check(response: bytes) -> None:
            data = body(code, response)
            assert re.fullmatch(pattern.replace("HEAD", head), data, re.S), (code, data[:120])

        return self._ex(code, request, check)

    def ex_j2(self) -> Exchange:
        return self._health("J2", b"J2", r"HEAD(\d{6}\d{10};){10}")

    def ex_j4(self) -> Exchange:
        return self._health("J4", b"J4", r"HEAD([A-Z0-9]{2}\d{12})*")

    def ex_j8(self) -> Exchange:
        return self._health("J8", b"J8", r"HEAD\d{10}\d{10}\d{7}\d{5}\d{8}")

    def ex_jk(self) -> Exchange:
        serial = re.escape(SERIAL[:12].ljust(12))
        return self._ex("JK", b"JK", lambda r: self._match("JK", r, serial + r"\d{12}.*"))

    def ex_ni(self) -> Exchange:
        record = r"TCP\d{5}.{15}\d{5}(LISTENING  |ESTABLISHED)\d{12}"
        return self._ex("NI", b"NIH0", lambda r: self._match("NI", r, r"\d{4}(" + record + ")+"))

    def _match(self, code: str, response: bytes, pattern: str) -> None:
        data = body(code, response)
        assert re.fullmatch(pattern, data, re.S), (code, data[:160])
