"""Typed errors of the domain services. Each front end maps them to its own wire format
(the ARM adapter to ARM's error JSON); services never build wire responses themselves."""
from __future__ import annotations


class HsmCloudError(Exception):
    """Base: a stable `code`, a message that names the fix, and the HTTP status ARM uses."""

    status = 400
    code = "BadRequest"

    def __init__(self, message: str, *, code: str | None = None, target: str | None = None,
                 details: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.target = target
        self.details = details or []

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.target:
            out["target"] = self.target
        if self.details:
            out["details"] = self.details
        return out


class InvalidRequest(HsmCloudError):
    status = 400
    code = "InvalidRequestContent"


class Unauthenticated(HsmCloudError):
    status = 401
    code = "AuthenticationFailed"


class Forbidden(HsmCloudError):
    status = 403
    code = "AuthorizationFailed"


class OperatorNotTenant(Forbidden):
    """An operator token on a tenant route: the provider keeps out of tenants' resources."""

    code = "OperatorNotTenant"

    def __init__(self, message: str = "Operator tokens cannot act on tenant resources; use the /operator "
                                      "surface ('hsmcloud operator ...'), or a tenant token from "
                                      "'hsmcloud token --subscription <id>'.", **kwargs):
        super().__init__(message, **kwargs)


class NotFound(HsmCloudError):
    status = 404
    code = "ResourceNotFound"


class Conflict(HsmCloudError):
    status = 409
    code = "Conflict"


class ServiceUnavailable(HsmCloudError):
    status = 503
    code = "ServiceUnavailable"
