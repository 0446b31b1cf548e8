"""The OAuth 2.0 client-credentials grant of the Entra-compatible token endpoint.

A service principal proves itself with its client secret or with a client assertion signed by
its certificate's key (what MSAL, azure-identity and the az CLI send), asks for
`<resource>/.default` of Azure Resource Manager, and gets the same EdDSA bearer token the ARM
surface verifies, carrying its subscription (or the operator role) and its appId."""
from __future__ import annotations

from dataclasses import dataclass

from hsmcloud.identity import oauth_errors as oauth
from hsmcloud.identity.service_principals import ASSERTION_TYPE, ServicePrincipals
from hsmcloud.identity.tokens import APP_TOKEN_LIFETIME, OPERATOR_ROLE, TokenAuthority

# The ARM resource identifiers a token may be asked for (`<resource>/.default`); the public cloud
# knows both. Every one gets the audience the ARM surface verifies.
ARM_RESOURCES = ("https://management.azure.com", "https://management.core.windows.net")
# Scopes MSAL may add on its own; they ask for nothing in the client-credentials grant.
RESERVED_SCOPES = {"openid", "profile", "offline_access"}


@dataclass(frozen=True, kw_only=True)
class TokenRequest:
    """A token request as the route read it: the form fields, and HTTP Basic client credentials if any."""

    form: dict[str, str]
    basic: tuple[str, str] | None = None
    # Token endpoint URLs a client assertion's `aud` may name (this endpoint as the client reached it).
    audiences: tuple[str, ...] = ()


def resource_of(scope: str | None) -> str:
    """The ARM resource of a `scope` parameter, or the OAuth error that says what to ask for."""
    scopes = [x for x in (scope or "").split() if x not in RESERVED_SCOPES]
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise oauth.InvalidScope(f"The provided value for the input parameter 'scope' is not valid: the "
                                 f"client_credentials grant takes exactly one scope, "
                                 f"'{ARM_RESOURCES[0]}/.default' (got '{scope or ''}').")
    resource = scopes[0][: -len("/.default")].rstrip("/")
    if resource.lower() not in ARM_RESOURCES:
        raise oauth.ResourceNotFound(f"The resource principal named {resource} was not found in the tenant. "
                                     f"This directory issues tokens for Azure Resource Manager only: ask for "
                                     f"'{ARM_RESOURCES[0]}/.default'.")
    return resource


class TokenEndpoint:
    def __init__(self, *, tenant_id: str, tokens: TokenAuthority, principals: ServicePrincipals):
        self.tenant_id = tenant_id
        self.tokens = tokens
        self.principals = principals

    def require_tenant(self, tenant: str) -> None:
        if tenant.lower() != self.tenant_id:
            raise oauth.TenantNotFound(f"Tenant '{tenant}' not found. This directory's tenant is "
                                       f"'{self.tenant_id}' (the 'tenant' that 'hsmcloud sp create' prints).")

    def grant(self, tenant: str, request: TokenRequest) -> dict:
        """The token response of one client-credentials request."""
        self.require_tenant(tenant)
        form = request.form
        grant_type = form.get("grant_type")
        if not grant_type:
            raise oauth.MissingParameter("The request body must contain the following parameter: 'grant_type'.")
        if grant_type != "client_credentials":
            raise oauth.UnsupportedGrantType(f"The app requested an unsupported grant type '{grant_type}': this "
                                             "directory supports client_credentials only.")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if request.basic:
            basic_id, secret = request.basic
            client_id = client_id or basic_id
            if basic_id != client_id:
                raise oauth.MissingParameter("client_id in the body and in the Authorization header differ.")
        if not client_id:
            raise oauth.MissingParameter("The request body must contain the following parameter: 'client_id'.")
        assertion = form.get("client_assertion")
        if secret is not None and assertion is not None:
            raise oauth.MissingParameter("Send either client_secret or client_assertion, not both.")
        if assertion is not None and form.get("client_assertion_type") != ASSERTION_TYPE:
            raise oauth.MissingParameter(f"client_assertion_type must be '{ASSERTION_TYPE}'.")
        if secret is None and assertion is None:
            raise oauth.NoClientCredential("The request body must contain the following parameter: "
                                           "'client_assertion' or 'client_secret'.")
        resource_of(form.get("scope"))
        sp = self.principals.authenticate(client_id=client_id, secret=secret, assertion=assertion,
                                          audiences=list(request.audiences))
        app = {"tid": self.tenant_id, "appid": sp.app_id, "oid": sp.id}
        token = self.tokens.issue(subscription_id=sp.subscription_id, operator=sp.role == OPERATOR_ROLE,
                                  name=sp.app_id, lifetime=APP_TOKEN_LIFETIME, app=app)
        seconds = int(APP_TOKEN_LIFETIME.total_seconds())
        return {"token_type": "Bearer", "expires_in": seconds, "ext_expires_in": seconds, "access_token": token}
