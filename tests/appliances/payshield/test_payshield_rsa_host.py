"""The RSA commands end to end over the host ports of a running appliance: a 2048-bit key pair
made with EI on HOST1 signs on HOST2 (EW); cryptography verifies the signature and EY agrees."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from hsmcloud.appliances.payshield.commands.rsa_messages import (
    ei_request,
    eo_request,
    ew_request,
    ey_request,
    parse_ej,
    parse_ep,
    parse_ex,
)

from payshield_helpers import allocate, authorize, config, error, guarded, host, load_lmk, running
from rsa_helpers import load_pkcs1_public_key


def test_rsa_sign_and_verify_over_both_host_ports(tmp_path):
    data = os.urandom(300)

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            await load_lmk(appliance, os.urandom(32), scheme="keyblock", slot=1)
            host1, host2 = await host(appliance, 1), await host(appliance, 2)
            try:
                assert error(await host1.call(ei_request("0", 2048)), b"EI") == "17"  # not authorised yet
                await authorize(appliance, 0)
                await authorize(appliance, 1)
                results = {}
                for lmk_id, keyblock in ((None, False), ("01", True)):
                    public_der, private_field = parse_ej(
                        await host1.call(ei_request("0", 2048, lmk_id=lmk_id, keyblock=keyblock))
                    )
                    signature = parse_ex(await host2.call(ew_request(data, private_field, lmk_id=lmk_id)))
                    public_key = parse_ep(await host2.call(eo_request(public_der, lmk_id=lmk_id)))
                    valid = await host1.call(ey_request(signature, data, public_key, lmk_id=lmk_id))
                    forged = await host1.call(ey_request(signature, data[::-1], public_key, lmk_id=lmk_id))
                    results[lmk_id] = (public_der, signature, valid[:4], forged[:4])
            finally:
                await host1.close()
                await host2.close()
        return results

    results = {}

    async def run():
        results.update(await scenario())

    guarded(run())
    for public_der, signature, valid, forged in results.values():
        public = load_pkcs1_public_key(public_der)
        assert public.key_size == 2048
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        assert (valid, forged) == (b"EZ00", b"EZ02")
