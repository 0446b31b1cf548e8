"""PKCS#11 return codes: the layer's own errors, and the one table mapping core errors to CKR_*.

A PKCS#11-layer refusal is a :class:`CkError` subclass carrying its CKR code. A core error
(protocol-neutral, ``core/errors.py``) becomes a CKR code only here, in
:data:`CORE_ERROR_CODES`; :func:`rv_of` answers the code of any exception.
"""

from __future__ import annotations

from typing import ClassVar

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import AttributeValueInvalid as _CodecValueInvalid
from hsmcloud.protocols.pkcs11.params import ParamError

from ..core import errors as core


class CkError(Exception):
    """A PKCS#11 function failed with ``rv``; nothing was changed."""

    rv: ClassVar[int] = c.CKR_GENERAL_ERROR
    default_message: ClassVar[str] = "The function failed."
    #: Response fields that travel with this rv (CKR_BUFFER_TOO_SMALL's needed length, ...).
    fields: tuple = ()

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


def _error(name: str, rv: int, message: str) -> type[CkError]:
    return type(name, (CkError,), {"rv": rv, "default_message": message,
                                   "__doc__": f"{c.rv_name(rv)}: {message}", "__module__": __name__})


ArgumentsBad = _error("ArgumentsBad", c.CKR_ARGUMENTS_BAD, "The arguments are not valid.")
SlotIdInvalid = _error("SlotIdInvalid", c.CKR_SLOT_ID_INVALID,
                       "The partition does not exist or is not assigned to this client.")
GeneralError = _error("GeneralError", c.CKR_GENERAL_ERROR, "An unexpected error happened.")
FunctionFailed = _error("FunctionFailed", c.CKR_FUNCTION_FAILED, "The function failed.")
FunctionNotSupported = _error("FunctionNotSupported", c.CKR_FUNCTION_NOT_SUPPORTED,
                              "The function is not supported.")
AttributeReadOnly = _error("AttributeReadOnly", c.CKR_ATTRIBUTE_READ_ONLY,
                           "The attribute cannot be set or changed.")
AttributeSensitive = _error("AttributeSensitive", c.CKR_ATTRIBUTE_SENSITIVE,
                            "The attribute is sensitive or unextractable.")
AttributeTypeInvalid = _error("AttributeTypeInvalid", c.CKR_ATTRIBUTE_TYPE_INVALID,
                              "The attribute type is not valid for this object.")
AttributeValueInvalid = _error("AttributeValueInvalid", c.CKR_ATTRIBUTE_VALUE_INVALID,
                               "The attribute value is not valid.")
ActionProhibited = _error("ActionProhibited", c.CKR_ACTION_PROHIBITED,
                          "The object's attributes forbid this action.")
DataInvalid = _error("DataInvalid", c.CKR_DATA_INVALID, "The data is not valid for the mechanism.")
DataLenRange = _error("DataLenRange", c.CKR_DATA_LEN_RANGE,
                      "The data length is outside what the mechanism accepts.")
DeviceError = _error("DeviceError", c.CKR_DEVICE_ERROR, "The appliance's state cannot be used.")
DeviceMemory = _error("DeviceMemory", c.CKR_DEVICE_MEMORY, "The partition has no room left.")
DeviceRemoved = _error("DeviceRemoved", c.CKR_DEVICE_REMOVED,
                       "The HSM was zeroized or re-initialized during the call.")
EncryptedDataInvalid = _error("EncryptedDataInvalid", c.CKR_ENCRYPTED_DATA_INVALID,
                              "The ciphertext is not valid.")
EncryptedDataLenRange = _error("EncryptedDataLenRange", c.CKR_ENCRYPTED_DATA_LEN_RANGE,
                               "The ciphertext length is not valid for the mechanism.")
KeyHandleInvalid = _error("KeyHandleInvalid", c.CKR_KEY_HANDLE_INVALID,
                          "There is no such key (or it is not visible to this session).")
KeySizeRange = _error("KeySizeRange", c.CKR_KEY_SIZE_RANGE,
                      "The key size is outside what the mechanism supports.")
KeyTypeInconsistent = _error("KeyTypeInconsistent", c.CKR_KEY_TYPE_INCONSISTENT,
                             "The key's type does not fit the mechanism.")
KeyIndigestible = _error("KeyIndigestible", c.CKR_KEY_INDIGESTIBLE,
                         "The key cannot be digested.")
KeyFunctionNotPermitted = _error("KeyFunctionNotPermitted", c.CKR_KEY_FUNCTION_NOT_PERMITTED,
                                 "The key's attributes do not permit this operation.")
KeyNotWrappable = _error("KeyNotWrappable", c.CKR_KEY_NOT_WRAPPABLE,
                         "The key cannot be wrapped (policy or CKA_WRAP_WITH_TRUSTED).")
KeyUnextractable = _error("KeyUnextractable", c.CKR_KEY_UNEXTRACTABLE,
                          "The key is not extractable (CKA_EXTRACTABLE is false).")
MechanismInvalid = _error("MechanismInvalid", c.CKR_MECHANISM_INVALID,
                          "The mechanism is not supported for this function.")
MechanismParamInvalid = _error("MechanismParamInvalid", c.CKR_MECHANISM_PARAM_INVALID,
                               "The mechanism's parameter is not valid.")
ObjectHandleInvalid = _error("ObjectHandleInvalid", c.CKR_OBJECT_HANDLE_INVALID,
                             "There is no such object (or it is not visible to this session).")
OperationActive = _error("OperationActive", c.CKR_OPERATION_ACTIVE,
                         "An operation of this kind is already active in the session.")
OperationNotInitialized = _error("OperationNotInitialized", c.CKR_OPERATION_NOT_INITIALIZED,
                                 "No operation of this kind is active in the session.")
PinIncorrect = _error("PinIncorrect", c.CKR_PIN_INCORRECT, "The PIN is incorrect.")
PinInvalid = _error("PinInvalid", c.CKR_PIN_INVALID, "The PIN has characters that are not allowed.")
PinLenRange = _error("PinLenRange", c.CKR_PIN_LEN_RANGE, "The PIN length is out of range.")
PinExpired = _error("PinExpired", c.CKR_PIN_EXPIRED,
                     "The PIN was set or reset by someone else and must be changed first.")
PinLocked = _error("PinLocked", c.CKR_PIN_LOCKED, "The role is locked out.")
SessionCount = _error("SessionCount", c.CKR_SESSION_COUNT, "Too many sessions are open.")
SessionHandleInvalid = _error("SessionHandleInvalid", c.CKR_SESSION_HANDLE_INVALID,
                              "There is no such session.")
SessionExists = _error("SessionExists", c.CKR_SESSION_EXISTS,
                       "The application has sessions open on the token.")
SessionParallelNotSupported = _error("SessionParallelNotSupported",
                                     c.CKR_SESSION_PARALLEL_NOT_SUPPORTED,
                                     "CKF_SERIAL_SESSION must be set.")
SessionReadOnly = _error("SessionReadOnly", c.CKR_SESSION_READ_ONLY,
                         "The session is read-only.")
SessionReadOnlyExists = _error("SessionReadOnlyExists", c.CKR_SESSION_READ_ONLY_EXISTS,
                               "A read-only session exists, so the SO cannot log in.")
SessionReadWriteSoExists = _error("SessionReadWriteSoExists", c.CKR_SESSION_READ_WRITE_SO_EXISTS,
                                  "The SO is logged in, so a read-only session cannot be opened.")
SignatureInvalid = _error("SignatureInvalid", c.CKR_SIGNATURE_INVALID, "The signature is not valid.")
SignatureLenRange = _error("SignatureLenRange", c.CKR_SIGNATURE_LEN_RANGE,
                           "The signature has the wrong length.")
TemplateIncomplete = _error("TemplateIncomplete", c.CKR_TEMPLATE_INCOMPLETE,
                            "The template lacks an attribute the object needs.")
TemplateInconsistent = _error("TemplateInconsistent", c.CKR_TEMPLATE_INCONSISTENT,
                              "The template's attributes conflict.")
TokenNotPresent = _error("TokenNotPresent", c.CKR_TOKEN_NOT_PRESENT, "The HSM is not initialized.")
TokenNotRecognized = _error("TokenNotRecognized", c.CKR_TOKEN_NOT_RECOGNIZED,
                            "The partition is not initialized.")
UnwrappingKeyHandleInvalid = _error("UnwrappingKeyHandleInvalid",
                                    c.CKR_UNWRAPPING_KEY_HANDLE_INVALID,
                                    "There is no such unwrapping key.")
UnwrappingKeySizeRange = _error("UnwrappingKeySizeRange", c.CKR_UNWRAPPING_KEY_SIZE_RANGE,
                                "The unwrapping key's size does not fit the mechanism.")
UnwrappingKeyTypeInconsistent = _error("UnwrappingKeyTypeInconsistent",
                                       c.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
                                       "The unwrapping key's type does not fit the mechanism.")
UserAlreadyLoggedIn = _error("UserAlreadyLoggedIn", c.CKR_USER_ALREADY_LOGGED_IN,
                             "That user is already logged in.")
UserNotLoggedIn = _error("UserNotLoggedIn", c.CKR_USER_NOT_LOGGED_IN,
                         "The function needs a login (as a role allowed to do it).")
UserPinNotInitialized = _error("UserPinNotInitialized", c.CKR_USER_PIN_NOT_INITIALIZED,
                               "The role's PIN is not initialized.")
UserTypeInvalid = _error("UserTypeInvalid", c.CKR_USER_TYPE_INVALID, "The user type is not valid.")
UserAnotherAlreadyLoggedIn = _error("UserAnotherAlreadyLoggedIn",
                                    c.CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
                                    "Another user is already logged in.")
WrappedKeyInvalid = _error("WrappedKeyInvalid", c.CKR_WRAPPED_KEY_INVALID,
                           "The wrapped key is not valid.")
WrappedKeyLenRange = _error("WrappedKeyLenRange", c.CKR_WRAPPED_KEY_LEN_RANGE,
                            "The wrapped key's length is not valid.")
WrappingKeyHandleInvalid = _error("WrappingKeyHandleInvalid", c.CKR_WRAPPING_KEY_HANDLE_INVALID,
                                  "There is no such wrapping key.")
WrappingKeySizeRange = _error("WrappingKeySizeRange", c.CKR_WRAPPING_KEY_SIZE_RANGE,
                              "The wrapping key's size does not fit the mechanism.")
WrappingKeyTypeInconsistent = _error("WrappingKeyTypeInconsistent",
                                     c.CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
                                     "The wrapping key's type does not fit the mechanism.")
RandomSeedNotSupported = _error("RandomSeedNotSupported", c.CKR_RANDOM_SEED_NOT_SUPPORTED,
                                "The HSM's generator takes no seed.")
DomainParamsInvalid = _error("DomainParamsInvalid", c.CKR_DOMAIN_PARAMS_INVALID,
                             "The domain parameters (CKA_EC_PARAMS) are not valid.")
CurveNotSupported = _error("CurveNotSupported", c.CKR_CURVE_NOT_SUPPORTED,
                           "The curve is not supported.")
BufferTooSmall = _error("BufferTooSmall", c.CKR_BUFFER_TOO_SMALL, "The output buffer is too small.")
SoLoginFailureThreshold = _error("SoLoginFailureThreshold", c.CKR_SO_LOGIN_FAILURE_THRESHOLD,
                                 "The Partition SO's last attempt failed; the partition is zeroized.")
AuditLoginTimeoutInProgress = _error("AuditLoginTimeoutInProgress",
                                     c.CKR_AUDIT_LOGIN_TIMEOUT_IN_PROGRESS,
                                     "The Auditor is locked out for a while.")
AuditLoginFailureThreshold = _error("AuditLoginFailureThreshold",
                                    c.CKR_AUDIT_LOGIN_FAILURE_THRESHOLD,
                                    "The Auditor's last attempt failed; it is locked out.")


#: Each core error class → its CKR code. Looked up along the class's MRO, most specific first.
CORE_ERROR_CODES: dict[type[Exception], int] = {
    core.LunaApplianceError: c.CKR_GENERAL_ERROR,
    core.StateError: c.CKR_DEVICE_ERROR,
    core.CoreError: c.CKR_FUNCTION_FAILED,
    core.InvalidUsage: c.CKR_ARGUMENTS_BAD,
    core.PasswordPolicyViolation: c.CKR_PIN_INVALID,
    core.PinLengthInvalid: c.CKR_PIN_LEN_RANGE,
    core.AuthenticationFailed: c.CKR_PIN_INCORRECT,
    core.HsmNotInitialized: c.CKR_TOKEN_NOT_PRESENT,
    core.StateChanged: c.CKR_DEVICE_REMOVED,
    core.PolicyUnknown: c.CKR_ARGUMENTS_BAD,
    core.PolicyValueInvalid: c.CKR_ARGUMENTS_BAD,
    core.PolicyNotAllowed: c.CKR_ACTION_PROHIBITED,
    core.AuditorNotInitialized: c.CKR_USER_PIN_NOT_INITIALIZED,
    core.AuditorLocked: c.CKR_AUDIT_LOGIN_TIMEOUT_IN_PROGRESS,
    core.AuditorLockedByFailedLogins: c.CKR_AUDIT_LOGIN_FAILURE_THRESHOLD,
    core.PartitionLimitReached: c.CKR_DEVICE_MEMORY,
    core.PartitionExists: c.CKR_ARGUMENTS_BAD,
    core.PartitionNotFound: c.CKR_SLOT_ID_INVALID,
    core.PartitionNotInitialized: c.CKR_TOKEN_NOT_RECOGNIZED,
    core.PartitionChanged: c.CKR_SESSION_HANDLE_INVALID,
    core.RoleNotInitialized: c.CKR_USER_PIN_NOT_INITIALIZED,
    core.RoleAlreadyInitialized: c.CKR_ACTION_PROHIBITED,
    core.NotAuthorized: c.CKR_USER_NOT_LOGGED_IN,
    core.NotLoggedIn: c.CKR_USER_NOT_LOGGED_IN,
    core.ResetNotAllowed: c.CKR_ACTION_PROHIBITED,
    core.PinIncorrect: c.CKR_PIN_INCORRECT,
    core.PartitionZeroizedByFailedLogins: c.CKR_SO_LOGIN_FAILURE_THRESHOLD,
    core.RoleLockedByFailedLogins: c.CKR_PIN_INCORRECT,
    core.RoleLocked: c.CKR_PIN_LOCKED,
    core.PinChangeRequired: c.CKR_PIN_EXPIRED,
    core.ObjectNotFound: c.CKR_OBJECT_HANDLE_INVALID,
    core.ObjectChanged: c.CKR_FUNCTION_FAILED,
    core.KeystoreFull: c.CKR_DEVICE_MEMORY,
    core.CloningNotAllowed: c.CKR_KEY_NOT_WRAPPABLE,
    core.CloningDomainMismatch: c.CKR_WRAPPED_KEY_INVALID,
    core.CloneOfferInvalid: c.CKR_OPERATION_NOT_INITIALIZED,
    core.CloneDataInvalid: c.CKR_DATA_INVALID,
    core.ClientExists: c.CKR_ARGUMENTS_BAD,
    core.ClientNotFound: c.CKR_ARGUMENTS_BAD,
    core.CertificateInvalid: c.CKR_ARGUMENTS_BAD,
    core.CertificateInUse: c.CKR_ARGUMENTS_BAD,
    core.PartitionAlreadyAssigned: c.CKR_ARGUMENTS_BAD,
    core.PartitionNotAssigned: c.CKR_SLOT_ID_INVALID,
    core.FileNotFound: c.CKR_ARGUMENTS_BAD,
    core.FileRefused: c.CKR_ARGUMENTS_BAD,
}


def rv_of(error: BaseException) -> int:
    """The CKR code that answers ``error`` (CKR_GENERAL_ERROR for anything unforeseen)."""
    if isinstance(error, CkError):
        return error.rv
    if isinstance(error, _CodecValueInvalid):
        return c.CKR_ATTRIBUTE_VALUE_INVALID
    if isinstance(error, ParamError):
        return c.CKR_MECHANISM_PARAM_INVALID
    for cls in type(error).__mro__:
        rv = CORE_ERROR_CODES.get(cls)
        if rv is not None:
            return rv
    return c.CKR_GENERAL_ERROR
