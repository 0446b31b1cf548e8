"""What Azure tooling needs to sign in: an Entra-compatible token endpoint and the cloud's metadata.

- `/{tenant}/v2.0/.well-known/openid-configuration`, `/{tenant}/discovery/v2.0/keys` and
  `/{tenant}/oauth2/v2.0/token` (client credentials) for MSAL, azure-identity and `az login`;
- `/metadata/endpoints`, which `az cloud register --endpoint-resource-manager` reads;
- the service principals behind them: `/subscriptions/{sub}/servicePrincipals` for a tenant,
  `/operator/servicePrincipals` for operators.

Token endpoint errors are Entra's error JSON (`error`, `error_description`, `error_codes`), the
format MSAL reads; every other route answers in ARM's envelope."""
from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hsmcloud.arm.api_versions import require_api_version
from hsmcloud.arm.auth import for_subscription, operator
from hsmcloud.arm.routes_hsm import json_body, services
from hsmcloud.errors import NotFound
from hsmcloud.identity import oauth_errors as oauth
from hsmcloud.identity.service_principals import describe
from hsmcloud.identity.token_endpoint import ARM_RESOURCES, TokenRequest
from hsmcloud.identity.tokens import AUDIENCE, ISSUER

router = APIRouter()
CLOUD_NAME = "hsmcloud"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def install(app: FastAPI) -> None:
    @app.exception_handler(oauth.OAuthError)
    async def _oauth(request: Request, exc: oauth.OAuthError):
        now = datetime.now(timezone.utc)
        trace = str(uuid.uuid4())
        return JSONResponse({"error": exc.error, "error_description": f"{exc.description}\r\nTrace ID: {trace}\r\n"
                                                                      f"Timestamp: {now.isoformat()}",
                             "error_codes": [exc.aadsts], "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
                             "trace_id": trace, "correlation_id": request.headers.get("client-request-id", trace)},
                            status_code=exc.status, headers=NO_STORE)


# ---- the token endpoint --------------------------------------------------------------------------

@router.get("/{tenant}/v2.0/.well-known/openid-configuration")
def openid_configuration(request: Request, tenant: str):
    """OpenID discovery, where MSAL finds the token endpoint (it reads the authorize and token URLs)."""
    svc = services(request)
    svc.token_endpoint.require_tenant(tenant)
    root = f"{base_url(request)}/{svc.token_endpoint.tenant_id}"
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "scopes_supported": [f"{ARM_RESOURCES[0]}/.default"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "claims_supported": ["iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "sub", "idtyp", "role", "sid"],
        "request_uri_parameter_supported": False,
        "tenant_region_scope": None,
        "cloud_instance_name": request.url.hostname,
    }


@router.get("/{tenant}/discovery/v2.0/keys")
def jwks(request: Request, tenant: str):
    """The key that verifies the tokens (EdDSA over Ed25519)."""
    svc = services(request)
    svc.token_endpoint.require_tenant(tenant)
    return svc.tokens.jwks()


@router.get("/{tenant}/oauth2/v2.0/authorize")
def authorize(request: Request, tenant: str):
    services(request).token_endpoint.require_tenant(tenant)
    raise oauth.InteractiveFlowNotSupported("There is no interactive sign-in here: users have no accounts in this "
                                            "directory. Sign in with a service principal (client credentials).")


def _form(raw: bytes, content_type: str) -> dict[str, str]:
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise oauth.MissingParameter("The token request must be an application/x-www-form-urlencoded POST body.")
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise oauth.MissingParameter("The token request body is not valid form data.") from None
    repeated = sorted(k for k, v in fields.items() if len(v) > 1)
    if repeated:
        raise oauth.MissingParameter(f"The parameter '{repeated[0]}' is given more than once.")
    return {k: v[0] for k, v in fields.items()}


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise oauth.MissingParameter("The Authorization header's Basic credentials are not valid base64.") from None
    if not sep:
        raise oauth.MissingParameter("Basic credentials must be 'client_id:client_secret'.")
    return unquote(client_id), unquote(secret)


@router.post("/{tenant}/oauth2/v2.0/token")
async def token(request: Request, tenant: str):
    """The client-credentials grant: a service principal's secret or client assertion for an ARM token."""
    svc = services(request)
    form = _form(await request.body(), request.headers.get("content-type", ""))
    endpoint = f"{base_url(request)}/{{}}/oauth2/v2.0/token"
    req = TokenRequest(form=form, basic=_basic(request.headers.get("authorization", "")),
                       audiences=(endpoint.format(svc.token_endpoint.tenant_id), endpoint.format(tenant)))
    # scrypt and the store: off the event loop.
    out = await run_in_threadpool(svc.token_endpoint.grant, tenant, req)
    return JSONResponse(out, headers=NO_STORE)


# ---- the cloud's metadata ------------------------------------------------------------------------

@router.get("/metadata/endpoints")
def metadata_endpoints(request: Request):
    """The cloud definition `az cloud register --endpoint-resource-manager` reads (no token needed)."""
    version = require_api_version(request.query_params.get("api-version"), "Microsoft.Resources")
    base = base_url(request)
    cloud = {"name": CLOUD_NAME, "resourceManager": f"{base}/", "portal": f"{base}/",
             "authentication": {"loginEndpoint": f"{base}/", "audiences": [AUDIENCE],
                                "tenant": services(request).token_endpoint.tenant_id, "identityProvider": "AAD"},
             "suffixes": {}}
    # 2019-05-01 answers the list of clouds (ARM_CLOUD_METADATA_URL); later versions the one cloud.
    return [cloud] if version == "2019-05-01" else cloud


# ---- service principals --------------------------------------------------------------------------
SP = "/subscriptions/{subscription_id}/servicePrincipals"
OP = "/operator/servicePrincipals"


def _created(svc, created) -> JSONResponse:
    out = describe(created.principal, svc.principals.tenant_id)
    out["password"] = created.secret.reveal() if created.secret else None  # shown this once
    return JSONResponse(out, status_code=201, headers=NO_STORE)


async def _create(request: Request, principal, sub: str | None) -> JSONResponse:
    body = await json_body(request) if await request.body() else None
    svc = services(request)

    def work():
        with svc.store.session() as s:
            return svc.principals.create(s, principal, subscription_id=sub, body=body)
    return _created(svc, await run_in_threadpool(work))


def _listing(request: Request, sub: str | None) -> dict:
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [describe(sp, svc.principals.tenant_id) for sp in svc.principals.list(s, subscription_id=sub)]}


def _one(request: Request, sub: str | None, app_id: str) -> dict:
    for item in _listing(request, sub)["value"]:
        if item["appId"] == app_id.lower():
            return item
    raise NotFound(f"Service principal '{app_id}' does not exist here: 'hsmcloud sp list' shows them.",
                   code="ServicePrincipalNotFound")


def _delete(request: Request, principal, sub: str | None, app_id: str) -> Response:
    svc = services(request)
    with svc.store.session() as s:
        svc.principals.delete(s, principal, subscription_id=sub, app_id=app_id)
    return Response(status_code=200)


@router.post(SP)
async def create_tenant_principal(request: Request, subscription_id: str):
    """A service principal whose tokens act on this subscription only (hsmcloud extension)."""
    principal, sub = for_subscription(request, subscription_id)
    return await _create(request, principal, sub)


@router.get(SP)
def list_tenant_principals(request: Request, subscription_id: str):
    _, sub = for_subscription(request, subscription_id)
    return _listing(request, sub)


@router.get(SP + "/{app_id}")
def get_tenant_principal(request: Request, subscription_id: str, app_id: str):
    _, sub = for_subscription(request, subscription_id)
    return _one(request, sub, app_id)


@router.delete(SP + "/{app_id}")
def delete_tenant_principal(request: Request, subscription_id: str, app_id: str):
    principal, sub = for_subscription(request, subscription_id)
    return _delete(request, principal, sub, app_id)


@router.post(OP)
async def create_operator_principal(request: Request):
    """A service principal whose tokens act on /operator only."""
    return await _create(request, operator(request), None)


@router.get(OP)
def list_operator_principals(request: Request):
    operator(request)
    return _listing(request, None)


@router.delete(OP + "/{app_id}")
def delete_operator_principal(request: Request, app_id: str):
    return _delete(request, operator(request), None, app_id)

