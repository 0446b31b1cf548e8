"""The AES key wrap primitives against `cryptography` (default IVs) and with caller-chosen IVs."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import keywrap as reference

from hsmcloud.appliances.luna.pkcs11.mechanisms import keywrap


@pytest.mark.parametrize("key_size", [16, 24, 32])
def test_kw_and_kwp_match_cryptography(key_size):
    key = os.urandom(key_size)
    for length in (16, 24, 32, 40, 64, 136):
        data = os.urandom(length)
        assert keywrap.kw_wrap(key, data) == reference.aes_key_wrap(key, data)
        assert keywrap.kw_unwrap(key, reference.aes_key_wrap(key, data)) == data
    for length in (1, 7, 8, 9, 20, 31, 32, 33, 100):
        data = os.urandom(length)
        assert keywrap.kwp_wrap(key, data) == reference.aes_key_wrap_with_padding(key, data)
        assert keywrap.kwp_unwrap(key, reference.aes_key_wrap_with_padding(key, data)) == data


def test_caller_chosen_ivs_are_checked_on_unwrap():
    key, data = os.urandom(32), os.urandom(32)
    iv = bytes.fromhex("0011223344556677")
    wrapped = keywrap.kw_wrap(key, data, iv)
    assert wrapped != keywrap.kw_wrap(key, data)
    assert keywrap.kw_unwrap(key, wrapped, iv) == data
    with pytest.raises(keywrap.UnwrapFailed):
        keywrap.kw_unwrap(key, wrapped)
    prefix = bytes.fromhex("01020304")
    wrapped = keywrap.kwp_wrap(key, data[:21], prefix)
    assert keywrap.kwp_unwrap(key, wrapped, prefix) == data[:21]
    with pytest.raises(keywrap.UnwrapFailed):
        keywrap.kwp_unwrap(key, wrapped)
    with pytest.raises(keywrap.UnwrapFailed):
        keywrap.kwp_unwrap(os.urandom(32), wrapped, prefix)
    with pytest.raises(ValueError):
        keywrap.kw_wrap(key, data[:15])
