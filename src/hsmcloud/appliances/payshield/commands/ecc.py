"""FY: generate an ECC key pair (key-block LMK).

Fields as payShield clients send them (aws-samples payshield ``build_fy_command``,
mszeu/PayShieldPressureTest): ``FY`` + ``01`` + curve (00 NIST P-256, 01 P-384, 02 P-521) +
public key encoding ``03`` + [``%``LMK] + ``#`` mode of use (S signature, X key derivation,
N both) + key version number (2) + exportability (E/N/S) + optional blocks ``00``.
Response: public key length (4N) + public key (DER SubjectPublicKeyInfo) + the private key as a
key block (usage 03, algorithm E) under the LMK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import HostError
from ..fields import Cursor
from ..lmk import KeyBlockLmk
from . import asymmetric as asym

if TYPE_CHECKING:
    from ..host_commands import CommandContext

CURVES: dict[str, type[ec.EllipticCurve]] = {"00": ec.SECP256R1, "01": ec.SECP384R1, "02": ec.SECP521R1}
ECC_KEY_TYPE = "01"
ECC_PUBLIC_KEY_ENCODING = "03"  # DER SubjectPublicKeyInfo
ECC_MODES = ("S", "X", "N")


def cmd_fy(ctx: CommandContext, cur: Cursor) -> str:
    if cur.take(2) != ECC_KEY_TYPE:
        raise HostError("15", "FY key type must be 01 (ECC)")
    curve = CURVES.get(cur.take(2))
    if curve is None:
        raise HostError("15", "curve must be 00 (P-256), 01 (P-384) or 02 (P-521)")
    if cur.take(2) != ECC_PUBLIC_KEY_ENCODING:
        raise HostError("03", "ECC public key encoding must be 03 (DER SubjectPublicKeyInfo)")
    block: dict[str, str] = {}

    def attributes(c: Cursor) -> None:
        block["mode_of_use"] = c.take(1)
        if block["mode_of_use"] not in ECC_MODES:
            raise HostError("A8", "ECC mode of use must be S, X or N")
        block["version"] = asym.take_key_version(c)
        block["exportability"] = asym.take_exportability(c)
        if c.take(2) != "00":
            raise HostError("15", "optional key-block blocks are not supported")

    lmk = ctx.lmk(asym.take_options(cur, {"#": attributes}))
    if not isinstance(lmk, KeyBlockLmk):
        raise HostError("A1", "ECC keys are kept in key blocks: FY needs a key-block LMK")
    if not block:
        raise HostError("15", "FY needs the '#' key-block fields (mode of use, KVN, exportability)")
    private = ec.generate_private_key(curve())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sealed = asym.seal_private_key(
        lmk, private, block["mode_of_use"], version=block["version"], exportability=block["exportability"]
    )
    return f"{len(public):04d}" + public.decode("latin-1") + sealed[len(asym.KEY_BLOCK_LENGTH):]
