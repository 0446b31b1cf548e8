"""SP 800-108 key derivation (CKM_SP800_108_COUNTER_KDF, CKM_SP800_108_FEEDBACK_KDF) and
attribute arrays read back, through a real NTLS connection.

Counter mode is checked against NIST CAVP vectors (a sample of the CAVS 14.4 KBKDF counter-mode
file that the `cryptography_vectors` package ships, in vectors/) and against `cryptography`'s
KBKDFHMAC/KBKDFCMAC; feedback mode against SP 800-108 §5.2 written out below with the standard
library's hmac.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import (
    CounterLocation,
    KBKDFCMAC,
    KBKDFHMAC,
    Mode,
)
from ntls_harness import Harness

from hsmcloud.clients.luna.ntls_client import Pkcs11Error
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import (
    CounterFormat,
    DkmLengthFormat,
    Mechanism,
    PrfDataParam,
    Sp800108CounterParams,
    Sp800108FeedbackParams,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nist-sp800-108-kbkdf-ctr-sample.json").read_text())
PRFS = {"HMAC_SHA1": c.CKM_SHA_1_HMAC, "HMAC_SHA224": c.CKM_SHA224_HMAC, "HMAC_SHA256": c.CKM_SHA256_HMAC,
        "HMAC_SHA384": c.CKM_SHA384_HMAC, "HMAC_SHA512": c.CKM_SHA512_HMAC, "CMAC_AES128": c.CKM_AES_CMAC,
        "CMAC_AES192": c.CKM_AES_CMAC, "CMAC_AES256": c.CKM_AES_CMAC}
READABLE = [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_GENERIC_SECRET), (c.CKA_SENSITIVE, False),
            (c.CKA_EXTRACTABLE, True)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("sp800-108"))
    yield h
    h.close()


@pytest.fixture(scope="module")
def ntls(harness):
    with harness.connect() as client:
        yield client


@pytest.fixture(scope="module")
def session(harness, ntls):
    return harness.session(ntls)


def base_key(ntls, session, value: bytes, key_type=c.CKK_GENERIC_SECRET, derive=True, extra=()):
    return ntls.create_object(session, [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, key_type),
                                        (c.CKA_VALUE, value), (c.CKA_DERIVE, derive), *extra])


def value_of(ntls, session, handle) -> bytes:
    return ntls.get_attributes(session, handle, c.CKA_VALUE)[c.CKA_VALUE]


def counter(bits: int, little: bool = False) -> PrfDataParam:
    return PrfDataParam(c.CK_SP800_108_ITERATION_VARIABLE, CounterFormat(little, bits))


def data(value: bytes) -> PrfDataParam:
    return PrfDataParam(c.CK_SP800_108_BYTE_ARRAY, value)


def dkm(bits: int, method=c.CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, little=False) -> PrfDataParam:
    return PrfDataParam(c.CK_SP800_108_DKM_LENGTH, DkmLengthFormat(method, little, bits))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['prf']}-{v['location']}-r{v['rlen_bits']}")
def test_counter_mode_matches_nist_cavp_vectors(ntls, session, vector):
    ki = bytes.fromhex(vector["KI"])
    key_type = c.CKK_AES if vector["prf"].startswith("CMAC") else c.CKK_GENERIC_SECRET
    base = base_key(ntls, session, ki, key_type)
    ctr = counter(vector["rlen_bits"])
    if vector["location"] == "BEFORE_FIXED":
        params = (ctr, data(bytes.fromhex(vector["FixedInputData"])))
    elif vector["location"] == "AFTER_FIXED":
        params = (data(bytes.fromhex(vector["FixedInputData"])), ctr)
    else:
        params = (data(bytes.fromhex(vector["DataBeforeCtrData"])), ctr,
                  data(bytes.fromhex(vector["DataAfterCtrData"])))
    mechanism = Mechanism(c.CKM_SP800_108_COUNTER_KDF, Sp800108CounterParams(PRFS[vector["prf"]], params, ()))
    length = int(vector["L"]) // 8
    derived = ntls.derive_key(session, mechanism, base, [*READABLE, (c.CKA_VALUE_LEN, length)])
    assert value_of(ntls, session, derived).hex() == vector["KO"]


def test_counter_mode_with_label_context_and_length_equals_cryptography_and_splits_additional_keys(
        ntls, session):
    ki, label, context = os.urandom(32), b"hsmcloud label", b"context bytes"
    base = base_key(ntls, session, ki)
    params = Sp800108CounterParams(
        c.CKM_SHA384_HMAC, (counter(32), data(label + b"\x00" + context), dkm(32)),
        ([(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE_LEN, 16),
          (c.CKA_SENSITIVE, False), (c.CKA_LABEL, b"second")],
         [*READABLE, (c.CKA_VALUE_LEN, 50)]))
    primary, more = ntls.derive_keys(session, Mechanism(c.CKM_SP800_108_COUNTER_KDF, params), base,
                                     [*READABLE, (c.CKA_VALUE_LEN, 32)])
    assert len(more) == 2 and len({primary, *more}) == 3
    expected = KBKDFHMAC(hashes.SHA384(), Mode.CounterMode, 32 + 16 + 50, 4, 4, CounterLocation.BeforeFixed,
                         label, context, None).derive(ki)
    assert value_of(ntls, session, primary) == expected[:32]
    assert value_of(ntls, session, more[0]) == expected[32:48]
    assert value_of(ntls, session, more[1]) == expected[48:]
    second = ntls.get_attributes(session, more[0], c.CKA_KEY_TYPE, c.CKA_LABEL, c.CKA_LOCAL)
    assert second == {c.CKA_KEY_TYPE: c.CKK_AES, c.CKA_LABEL: b"second", c.CKA_LOCAL: False}


def test_counter_mode_cmac_equals_cryptography(ntls, session):
    ki = os.urandom(32)
    base = base_key(ntls, session, ki, c.CKK_AES)
    params = Sp800108CounterParams(c.CKM_AES_CMAC, (data(b"label\x00ctx"), counter(16), dkm(16)), ())
    derived = ntls.derive_key(session, Mechanism(c.CKM_SP800_108_COUNTER_KDF, params), base,
                              [*READABLE, (c.CKA_VALUE_LEN, 40)])
    expected = KBKDFCMAC(algorithms.AES, Mode.CounterMode, 40, 2, None, CounterLocation.MiddleFixed, None, None,
                         b"label\x00ctx" + (320).to_bytes(2, "big"), break_location=len(b"label\x00ctx")).derive(ki)
    assert value_of(ntls, session, derived) == expected


def feedback_reference(key: bytes, digest, iv: bytes, fixed: bytes, length: int, counter_bits: int | None) -> bytes:
    """SP 800-108 §5.2: K(i) = PRF(K_I, K(i-1) [|| [i]_r] || fixed), K(0) = IV."""
    out, previous, i = b"", iv, 1
    while len(out) < length:
        block = previous + (i.to_bytes(counter_bits // 8, "big") if counter_bits else b"") + fixed
        previous = std_hmac.new(key, block, digest).digest()
        out += previous
        i += 1
    return out[:length]


@pytest.mark.parametrize("iv,counter_bits", [(b"", None), (bytes(range(32)), 8), (os.urandom(16), 32)])
def test_feedback_mode_matches_sp800_108(ntls, session, iv, counter_bits):
    ki, fixed = os.urandom(32), b"feedback label\x00context" + (600).to_bytes(4, "big")
    base = base_key(ntls, session, ki)
    params = [PrfDataParam(c.CK_SP800_108_ITERATION_VARIABLE, None)]
    if counter_bits:
        params.append(PrfDataParam(c.CK_SP800_108_OPTIONAL_COUNTER, CounterFormat(False, counter_bits)))
    params += [data(b"feedback label\x00context"), dkm(32)]
    mechanism = Mechanism(c.CKM_SP800_108_FEEDBACK_KDF,
                          Sp800108FeedbackParams(c.CKM_SHA256_HMAC, tuple(params), iv, ()))
    derived = ntls.derive_key(session, mechanism, base, [*READABLE, (c.CKA_VALUE_LEN, 75)])
    assert value_of(ntls, session, derived) == feedback_reference(ki, hashlib.sha256, iv, fixed, 75, counter_bits)


def test_dkm_length_sum_of_segments_and_a_little_endian_counter(ntls, session):
    ki = os.urandom(20)
    base = base_key(ntls, session, ki)
    params = Sp800108CounterParams(c.CKM_SHA256_HMAC, (
        counter(16, little=True), data(b"L"), dkm(16, c.CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS, little=True)), ())
    derived = ntls.derive_key(session, Mechanism(c.CKM_SP800_108_COUNTER_KDF, params), base,
                              [*READABLE, (c.CKA_VALUE_LEN, 33)])
    segments = (2 * 32 * 8).to_bytes(2, "little")  # two SHA-256 blocks cover 33 bytes
    expected = b"".join(std_hmac.new(ki, i.to_bytes(2, "little") + b"L" + segments, hashlib.sha256).digest()
                        for i in (1, 2))[:33]
    assert value_of(ntls, session, derived) == expected


def derive_error(ntls, session, base, mechanism, template, *, more=False) -> int:
    before = len(ntls.find_objects(session, []))
    with pytest.raises(Pkcs11Error) as error:
        if more:
            ntls.derive_keys(session, mechanism, base, template)
        else:
            ntls.derive_key(session, mechanism, base, template)
    assert len(ntls.find_objects(session, [])) == before  # nothing was created
    return error.value.rv


def test_sp800_108_errors(ntls, session):
    hmac_base = base_key(ntls, session, os.urandom(32))
    aes_base = base_key(ntls, session, os.urandom(16), c.CKK_AES)
    template = [*READABLE, (c.CKA_VALUE_LEN, 32)]

    def counter_mode(*params, prf=c.CKM_SHA256_HMAC, more=()):
        return Mechanism(c.CKM_SP800_108_COUNTER_KDF, Sp800108CounterParams(prf, tuple(params), more))

    bad_params = [
        counter_mode(data(b"no iteration variable")),
        counter_mode(counter(32), counter(8)),
        counter_mode(counter(12)),
        counter_mode(counter(32), dkm(32), dkm(16)),
        counter_mode(counter(32), dkm(32, method=7)),
        counter_mode(counter(32), PrfDataParam(c.CK_SP800_108_OPTIONAL_COUNTER, CounterFormat(False, 8))),
        counter_mode(PrfDataParam(c.CK_SP800_108_ITERATION_VARIABLE, None)),
        counter_mode(counter(32), prf=c.CKM_SHA256),
        counter_mode(counter(8), dkm(8)),  # [L] = 256 does not fit in 8 bits
        Mechanism(c.CKM_SP800_108_FEEDBACK_KDF,
                  Sp800108FeedbackParams(c.CKM_SHA256_HMAC, (counter(32),), b"", ())),
        Mechanism(c.CKM_SP800_108_COUNTER_KDF, None),
    ]
    for mechanism in bad_params:
        assert derive_error(ntls, session, hmac_base, mechanism, template) == c.CKR_MECHANISM_PARAM_INVALID, mechanism
    assert derive_error(ntls, session, hmac_base, counter_mode(counter(32)), READABLE) == c.CKR_TEMPLATE_INCOMPLETE
    assert derive_error(ntls, session, hmac_base, counter_mode(counter(32), prf=c.CKM_AES_CMAC),
                        template) == c.CKR_KEY_TYPE_INCONSISTENT
    assert derive_error(ntls, session, aes_base, counter_mode(counter(32)), template) == c.CKR_KEY_TYPE_INCONSISTENT
    no_derive = base_key(ntls, session, os.urandom(32), derive=False)
    assert derive_error(ntls, session, no_derive, counter_mode(counter(32)),
                        template) == c.CKR_KEY_FUNCTION_NOT_PERMITTED
    # additional keys: only with DERIVE_KEYS; a bad additional template creates no key at all
    with_more = counter_mode(counter(32), more=([*READABLE, (c.CKA_VALUE_LEN, 16)],))
    assert derive_error(ntls, session, hmac_base, with_more, template) == c.CKR_MECHANISM_PARAM_INVALID
    no_length = counter_mode(counter(32), more=([*READABLE, (c.CKA_VALUE_LEN, 16)], READABLE))
    assert derive_error(ntls, session, hmac_base, no_length, template, more=True) == c.CKR_TEMPLATE_INCOMPLETE
    pinned = base_key(ntls, session, os.urandom(32), extra=[(c.CKA_DERIVE_TEMPLATE, ((c.CKA_SENSITIVE, True),))])
    conflicting = counter_mode(counter(32), more=([*READABLE, (c.CKA_VALUE_LEN, 16)],))
    assert derive_error(ntls, session, pinned, conflicting, [(c.CKA_VALUE_LEN, 16)],
                        more=True) == c.CKR_TEMPLATE_INCONSISTENT


def test_mechanism_info_offers_both_modes_for_derive(harness, ntls):
    mechanisms = ntls.get_mechanism_list(harness.serial)
    assert {c.CKM_SP800_108_COUNTER_KDF, c.CKM_SP800_108_FEEDBACK_KDF} <= set(mechanisms)
    for mechanism in (c.CKM_SP800_108_COUNTER_KDF, c.CKM_SP800_108_FEEDBACK_KDF):
        low, high, flags = ntls.get_mechanism_info(harness.serial, mechanism)
        assert (low, high) == (1, 512) and flags & c.CKF_DERIVE and not flags & c.CKF_ENCRYPT


def test_attribute_arrays_read_back_as_templates(ntls, session):
    wrap_template = ((c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_EXTRACTABLE, True))
    derive_template = ((c.CKA_SENSITIVE, True), (c.CKA_LABEL, b"derived"))
    key = ntls.create_object(session, [
        (c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE, os.urandom(32)),
        (c.CKA_WRAP, True), (c.CKA_WRAP_TEMPLATE, wrap_template), (c.CKA_DERIVE_TEMPLATE, derive_template),
        (c.CKA_ALLOWED_MECHANISMS, (c.CKM_AES_KEY_WRAP, c.CKM_AES_KEY_WRAP_PAD))])
    got = ntls.get_attributes(session, key, c.CKA_WRAP_TEMPLATE, c.CKA_UNWRAP_TEMPLATE, c.CKA_DERIVE_TEMPLATE,
                              c.CKA_ALLOWED_MECHANISMS)
    assert dict(got[c.CKA_WRAP_TEMPLATE]) == dict(wrap_template)
    assert got[c.CKA_UNWRAP_TEMPLATE] == ()
    assert dict(got[c.CKA_DERIVE_TEMPLATE]) == dict(derive_template)
    assert got[c.CKA_ALLOWED_MECHANISMS] == (c.CKM_AES_KEY_WRAP, c.CKM_AES_KEY_WRAP_PAD)
