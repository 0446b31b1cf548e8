"""Typed errors of the payShield appliance.

Host-command failures carry the payShield two-character error code (``host_commands`` turns
them into the response's error field); management failures carry an HTTP status and a short
machine-readable code (``management`` renders them as JSON).
"""

from __future__ import annotations


class PayShieldError(Exception):
    """Base class of every error raised by the payShield appliance package."""


class StateError(PayShieldError):
    """The state directory cannot be used (another device's, newer schema, bad master key)."""


# -- host commands -------------------------------------------------------------------------

#: Error codes this emulation returns, with the meaning the host command manual gives.
HOST_ERROR_MEANINGS = {
    "00": "No error",
    "01": "Verification failure or warning (e.g. imported key parity)",
    "02": "Key length inappropriate for the algorithm",
    "03": "Invalid number of components",
    "04": "Invalid key type code",
    "05": "Invalid key length flag",
    "06": "Public exponent length error, or invalid signature identifier (RSA commands)",
    "07": "Invalid pad mode identifier (RSA commands)",
    "08": "Supplied public exponent is even",
    "10": "Source key parity error",
    "11": "Destination key parity error or key all zeros",
    "12": "No keys loaded in user storage",
    "13": "Invalid LMK identifier (or no LMK loaded in that slot)",
    "14": "PIN encrypted under LMK pair 02-03 is invalid",
    "15": "Invalid input data",
    "17": "HSM is not in the authorised state, or command prohibited",
    "20": "PIN block does not contain valid values",
    "23": "Invalid PIN block format code",
    "24": "PIN is fewer than 4 or more than 12 digits in length",
    "25": "Decimalization table error",
    "26": "Invalid key scheme",
    "27": "Incompatible key length",
    "28": "Invalid key type",
    "29": "Key function not permitted",
    "41": "Internal hardware/software error",
    "43": "RSA key generation failure",
    "49": "Private key error",
    "51": "Invalid message header",
    "52": "Invalid branch factor / height (EMV2000 tree)",
    "68": "Command has been disabled",
    "74": "Invalid digest info syntax (no-hash mode only)",
    "76": "RSA public key length error or RSA encrypted data length error",
    "77": "Clear data block error",
    "78": "Private key length error",
    "80": "Data length error",
    "81": "PIN length mismatch (the PIN is shorter than the check length); NI: invalid network interface value",
    "82": "Invalid Ethernet statistics value (NI)",
    "83": "Key block format error",
    "84": "Key block check value error",
    "A1": "Incompatible LMK schemes",
    "A4": "Key block authentication failure",
    "A6": "Invalid key usage for this command",
    "A7": "Invalid algorithm",
    "A8": "Invalid mode of use",
    "AA": "Key not exportable",
}


class HostError(PayShieldError):
    """A host command failed with payShield error ``code`` (no response data follows)."""

    def __init__(self, code: str, message: str = "") -> None:
        assert code in HOST_ERROR_MEANINGS, code
        super().__init__(message or HOST_ERROR_MEANINGS[code])
        self.code = code
        self.message = message or HOST_ERROR_MEANINGS[code]


# -- management API ------------------------------------------------------------------------


class ManagementError(PayShieldError):
    """A management request was refused; nothing was changed."""

    status = 400
    code = "BadRequest"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ManagementError):
    status, code = 400, "InvalidRequest"


class NotAuthorized(ManagementError):
    """The operation needs the authorised state (payShield error 17 on the host side)."""

    status, code = 403, "NotAuthorized"


class CardError(ManagementError):
    """An admin card file is malformed, duplicated, or its PIN is wrong."""

    status, code = 400, "CardError"


class LmkError(ManagementError):
    status, code = 409, "LmkError"


class AlreadyClaimed(ManagementError):
    """The provider tried to register a tenant credential on a device a tenant already holds."""

    status, code = 409, "AlreadyClaimed"


class FirmwareRefused(ManagementError):
    status, code = 409, "FirmwareRefused"


class NotFound(ManagementError):
    status, code = 404, "NotFound"


class InvalidCertificate(ManagementError):
    """A certificate given to trust is not one (or comes with a private key)."""

    status, code = 400, "InvalidCertificate"


class NoTrustedClientCertificate(ManagementError):
    """Mutual TLS on a host port needs at least one trusted client certificate."""

    status, code = 409, "NoTrustedClientCertificate"
