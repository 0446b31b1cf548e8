"""Typed errors of the Luna appliance core: one class per condition, each with its default message.

They are protocol-neutral. Each adapter maps them once: LunaSH prints ``Error: <message>``
and a result line (``lunash/errors.py``), PKCS#11 turns each class into one CKR_* code
(``pkcs11/errors.py``), NTLS logs. Nothing was changed by a refused request unless the
message says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar


class LunaApplianceError(Exception):
    """Base class of every error raised by the Luna appliance package."""

    default_message: ClassVar[str] = "The appliance refused the request."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class StateError(LunaApplianceError):
    """The state directory cannot be used (belongs to another device, newer schema, ...)."""


class CoreError(LunaApplianceError):
    """A request the appliance refused; nothing was changed unless the message says so."""


# -- input ------------------------------------------------------------------------------


class InvalidUsage(CoreError):
    """A value given is malformed or out of range (a shell flag, a name, a length)."""

    default_message = "A value given is not valid."


class PasswordPolicyViolation(CoreError):
    """A new password does not meet the appliance's or HSM's password rules."""

    default_message = "The new password does not meet the password rules."


class PinLengthInvalid(CoreError):
    """A partition role PIN is shorter or longer than partition policies 25/26 allow."""

    default_message = "The PIN length is outside the range the partition's policies allow."


class AuthenticationFailed(CoreError):
    """A password given to the shell (current admin password, HSM SO password) is wrong."""

    default_message = "The password is incorrect."


# -- HSM --------------------------------------------------------------------------------


class HsmNotInitialized(CoreError):
    """The HSM is zeroized or brand new and must be initialized with ``hsm init`` first."""

    default_message = (
        "The HSM is zeroized (not initialized). Initialize it first: hsm init -label <label>"
    )


class StateChanged(CoreError):
    """The HSM changed (zeroized, reset) while the command was running; nothing was done."""

    default_message = "The HSM was zeroized or re-initialized meanwhile; nothing was changed."


class PolicyUnknown(CoreError):
    """There is no HSM or partition policy with that number."""

    default_message = "There is no policy with that number. See: hsm showpolicies"


class PolicyValueInvalid(CoreError):
    """The value is outside what the policy accepts."""

    default_message = "The value is not allowed for this policy."


class PolicyNotAllowed(CoreError):
    """The value would be less secure than the HSM policy it depends on allows."""

    default_message = "The HSM policies do not allow this partition policy value."


# -- Auditor ----------------------------------------------------------------------------


class AuditorNotInitialized(CoreError):
    """The Audit role has not been initialized (``audit init``)."""

    default_message = "The Audit role is not initialized. Initialize it first: audit init"


class AuditorLocked(CoreError):
    """The Auditor is locked out after too many bad logins; it unlocks by itself."""

    default_message = "The Auditor is locked out after too many failed logins."

    def __init__(self, message: str | None = None, *, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


# -- partitions -------------------------------------------------------------------------


class PartitionLimitReached(CoreError):
    """The HSM already holds its maximum number of partitions."""

    default_message = "The HSM already holds the maximum number of partitions."


class PartitionExists(CoreError):
    """A partition with that name already exists."""

    default_message = "A partition with that name already exists."


class PartitionNotFound(CoreError):
    """No partition with that name or serial number exists (any more)."""

    default_message = "There is no such partition. See: partition list"


class PartitionNotInitialized(CoreError):
    """The partition exists but has not been initialized (no Partition SO, no label)."""

    default_message = (
        "The partition is not initialized. Initialize it first (LunaCM partition init, or "
        "C_InitToken)."
    )


class PartitionChanged(CoreError):
    """The partition was zeroized or re-initialized since the login or session was made."""

    default_message = (
        "The partition was zeroized or re-initialized since this login; log in again."
    )


# -- roles ------------------------------------------------------------------------------


class RoleNotInitialized(CoreError):
    """The role has no PIN yet: the Partition SO initializes the CO, the CO the CU."""

    default_message = "The role is not initialized."


class RoleAlreadyInitialized(CoreError):
    """``role init`` on a role that already has a PIN (use ``role resetpw`` or re-initialize)."""

    default_message = "The role is already initialized."


class NotAuthorized(CoreError):
    """The logged-in role may not do this (for example the CU initializing the CO)."""

    default_message = "The logged-in role is not allowed to do this."


class NotLoggedIn(CoreError):
    """The operation needs a role that is not logged in (the HSM SO in LunaSH, or a partition role)."""

    default_message = "The operation needs a login first."


class ResetNotAllowed(CoreError):
    """The Partition SO may reset the CO only when HSM policy 15 (SO reset of partition PIN) is 1."""

    default_message = (
        "The Partition SO cannot reset the Crypto Officer: HSM policy 15 (Enable SO reset of "
        "partition PIN) is 0. The Crypto Officer can only be recovered by re-initializing the "
        "partition."
    )


class PinIncorrect(CoreError):
    """A wrong PIN or password for a partition role or the Auditor; the failure is counted."""

    default_message = "The PIN is incorrect."

    def __init__(self, message: str | None = None, *, attempts_left: int = 0) -> None:
        super().__init__(message)
        self.attempts_left = attempts_left


class PartitionZeroizedByFailedLogins(PinIncorrect):
    """The Partition SO's last allowed wrong PIN: the partition is zeroized (in the same transaction)."""

    default_message = (
        "The PIN is incorrect, and that was the last attempt: the partition is zeroized. "
        "Initialize it again and restore from a backup."
    )


class RoleLockedByFailedLogins(PinIncorrect):
    """The CO's or CU's last allowed wrong PIN: the role is locked out now."""

    default_message = "The PIN is incorrect, and that was the last attempt: the role is locked out."


class AuditorLockedByFailedLogins(PinIncorrect):
    """The Auditor's last allowed wrong password: it is locked out for 10 minutes."""

    default_message = (
        "The password is incorrect, and that was the last attempt: the Auditor is locked out for "
        "10 minutes."
    )


class RoleLocked(CoreError):
    """The role is locked out after too many failed logins (the PIN was not checked)."""

    default_message = "The role is locked out after too many failed logins."


class PinChangeRequired(CoreError):
    """The role's PIN was set or reset by someone else and must be changed first (policy 21)."""

    default_message = "The PIN must be changed first (role changepw / C_SetPIN)."


# -- keystore ---------------------------------------------------------------------------


class ObjectNotFound(CoreError):
    """No object with that handle in the partition (destroyed, or never there)."""

    default_message = "There is no object with that handle in the partition."


class ObjectChanged(CoreError):
    """The object was changed by someone else since it was read (version mismatch)."""

    default_message = "The object was changed meanwhile; read it again."


class KeystoreFull(CoreError):
    """The partition holds as many objects as the model allows."""

    default_message = "The partition has no room for another object."


# -- cloning and backup -----------------------------------------------------------------


class CloningNotAllowed(CoreError):
    """HSM policy 7, or partition policy 0 (private keys) / 4 (secret keys), forbids cloning."""

    default_message = "The cloning policies of the HSM or the partition forbid cloning this object."


class CloningDomainMismatch(CoreError):
    """A clone offer, clone blob or backup does not authenticate under this partition's
    cloning domain: it comes from another domain (or was modified)."""

    default_message = ("The partitions are not in the same cloning domain (or the data was "
                       "modified): nothing was cloned or restored.")


class CloneOfferInvalid(CoreError):
    """A clone blob's offer is unknown here, used already, expired, or for another partition."""

    default_message = ("The clone offer is unknown, used already, expired or made for another "
                       "partition: ask the target partition for a new offer.")


class CloneDataInvalid(CoreError):
    """Bytes that are not a clone offer, clone blob or backup file at all."""

    default_message = "The data is not an hsmcloud clone offer, clone blob or backup file."


# -- NTLS clients and the admin's files -------------------------------------------------


class ClientExists(CoreError):
    """A client with that name is already registered."""

    default_message = "A client with that name is already registered. See: client list"


class ClientNotFound(CoreError):
    """No client with that name is registered."""

    default_message = "There is no client with that name. See: client list"


class CertificateInvalid(CoreError):
    """The file is not a PEM X.509 certificate this appliance can use for a client."""

    default_message = "The file is not a valid PEM X.509 certificate."


class CertificateInUse(CoreError):
    """Another registered client already uses the same certificate."""

    default_message = "Another registered client already uses this certificate."


class PartitionAlreadyAssigned(CoreError):
    """The partition is already assigned to that client."""

    default_message = "The partition is already assigned to this client."


class PartitionNotAssigned(CoreError):
    """The partition is not assigned to that client."""

    default_message = "The partition is not assigned to this client."


class FileNotFound(CoreError):
    """No file of that name in the admin's file area."""

    default_message = "There is no such file. See: my file list"


class FileRefused(CoreError):
    """The admin's file area does not take this file (name, type, size or count)."""

    default_message = "The file is not accepted."
