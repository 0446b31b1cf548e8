"""Who is calling the ARM surface, and may they touch this subscription.

Tenant resources answer tenant tokens only. An operator token gets the /operator surface and
nothing else: after a device is handed over the provider has no logical access to it, so it
must not read a tenant's resources, endpoints or credentials through the tenant's routes."""
from __future__ import annotations

from fastapi import Request

from hsmcloud.errors import Forbidden, OperatorNotTenant, Unauthenticated
from hsmcloud.identity.tokens import Principal, normalize_subscription_id


def principal_of(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authentication failed. The 'Authorization' header is missing: send 'Authorization: "
                              "Bearer <token>' with a token from 'hsmcloud token'.",
                              code="AuthenticationFailedMissingToken")
    return request.app.state.services.tokens.verify(token.strip())


def for_subscription(request: Request, subscription_id: str) -> tuple[Principal, str]:
    """The tenant principal acting on `subscription_id`; every /subscriptions route starts here."""
    principal = principal_of(request)
    if principal.is_operator:
        raise OperatorNotTenant()
    sub = normalize_subscription_id(subscription_id)
    if principal.subscription_id != sub:
        raise Forbidden(f"The client '{principal.name}' does not have authorization to perform this action over "
                        f"scope '/subscriptions/{subscription_id}'. Use a token issued for that subscription.",
                        code="AuthorizationFailed")
    return principal, sub


def operator(request: Request) -> Principal:
    principal = principal_of(request)
    if not principal.is_operator:
        raise Forbidden("This operation is for provider operators only. Use 'hsmcloud token --operator'.",
                        code="OperatorRoleRequired")
    return principal
