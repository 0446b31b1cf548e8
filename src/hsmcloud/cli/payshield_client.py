"""How `hsmcloud payshield ...` reaches a payment HSM: its endpoints from the service, the tenant's
own management credential from the tenant's home, then the appliance's management REST API.

The service (ARM side) hands a tenant the appliance's address and ports
(`GET .../dedicatedHSMs/{name}/endpoints`), never a credential. The first use claims one
(`POST .../managementCredential` with only the SHA-256 of a token made here) and saves it in
`$HSMCLOUD_CLIENT_HOME` (`cli/credentials.py`); the management API is plain HTTP JSON on
`http://<address>:<ports.management>` with `Authorization: Bearer <token>`. Every failure here is
a `CliError`, so the command wrapper prints it as one `error: <code>: <message>` line."""
from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Any

import httpx

from hsmcloud.cli.client import HSM_API, Client, CliError, _is_loopback_host, one_line
from hsmcloud.cli.credentials import CLIENT_HOME_ENV, CredentialStore, SavedCredential, token_sha256

PAYMENT_KIND = "payshield"


class Management:
    """A thin HTTP client for one payShield appliance's management API, as its tenant."""

    def __init__(self, *, name: str, address: str, port: int, token: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None, unauthorized_hint: str = ""):
        if not _is_loopback_host(address):
            raise CliError("InvalidEndpoint", f"The appliance address '{address}' of '{name}' is not a loopback "
                                              "address: hsmcloud only talks to appliances on 127.0.0.0/8 (or ::1).")
        host = f"[{address}]" if _is_ipv6(address) else address
        self.name = name
        self.url = f"http://{host}:{port}"
        self.unauthorized_hint = unauthorized_hint
        kwargs: dict[str, Any] = {}
        if transport is not None:
            kwargs["transport"] = transport
        # trust_env=False: never route through a proxy from the environment; the appliance is on loopback.
        self._http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False,
                                  headers={"Authorization": f"Bearer {token}", "User-Agent": "hsmcloud-cli"},
                                  **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Management":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if params:
            kwargs["params"] = params
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError("ApplianceUnreachable", f"The management port of payment HSM '{self.name}' at {self.url} "
                                                   f"does not answer ({one_line(str(exc)) or 'connection refused'})."
                           ) from None
        except httpx.TimeoutException:
            raise CliError("ApplianceTimeout", f"The management port of payment HSM '{self.name}' at {self.url} did "
                                               "not answer in time.") from None
        except httpx.HTTPError as exc:
            raise CliError("ApplianceUnreachable", f"Cannot talk to the management port of payment HSM '{self.name}' "
                                                   f"at {self.url}: {one_line(str(exc)) or exc.__class__.__name__}."
                           ) from None
        if not 200 <= resp.status_code < 300:
            raise management_error(resp, self.unauthorized_hint)
        return resp

    def json(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> Any:
        resp = self.send(method, path, body=body, params=params)
        try:
            return resp.json()
        except ValueError:
            raise CliError("InvalidResponse", f"The appliance answered {method} {path} with something that is not "
                                              "JSON.") from None

    def text(self, method: str, path: str, *, params: dict | None = None) -> str:
        return self.send(method, path, params=params).text


def _is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).version == 6
    except ValueError:
        return False


def management_error(resp: httpx.Response, unauthorized_hint: str = "") -> CliError:
    """The appliance's `{"error": {"code", "message"}}` as a CliError (a readable fallback otherwise)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or f"Http{resp.status_code}")
        message = one_line(str(body["error"].get("message") or resp.reason_phrase or ""))
    else:
        code = f"Http{resp.status_code}"
        message = one_line(resp.text or resp.reason_phrase or "")[:300] or \
            f"The appliance answered HTTP {resp.status_code}."
    if resp.status_code == 401 and unauthorized_hint:
        message = f"{message} {unauthorized_hint}"
    return CliError(code, message, status=resp.status_code, body=body)


def endpoints(client: Client, resource_group: str, name: str) -> dict:
    """The appliance endpoints of a dedicated HSM, checked to be a payment HSM's."""
    data = client.get(client.hsm_path(resource_group, name) + "/endpoints", params={"api-version": HSM_API}) or {}
    kind = data.get("kind")
    if kind != PAYMENT_KIND:
        raise CliError("NotAPaymentHsm", f"Dedicated HSM '{name}' (SKU {data.get('sku') or '?'}, a {kind or 'unknown'}"
                                         " appliance) is not a payment HSM: the payshield commands manage "
                                         "payShield10K_LMK* SKUs.")
    ports = data.get("ports") or {}
    if not data.get("address") or not isinstance(ports.get("management"), int) or not data.get("serial"):
        raise CliError("InvalidResponse", f"The service gave no management endpoint for payment HSM '{name}'.")
    return data


# ---- the tenant's management credential -----------------------------------------------------------
def _args(resource_group: str, name: str) -> str:
    return f"-g {resource_group} -n {name}"


def management_for(ep: dict, cred: SavedCredential, *, token: str | None = None,
                   store: CredentialStore | None = None) -> Management:
    """A management client of the payment HSM `ep` with the saved credential (or `token`)."""
    path = (store or CredentialStore()).path_of(cred)
    hint = (f"The device does not take the management credential saved for payment HSM '{cred.name}' in {path}: "
            "after a release it holds none. Claim a new one with 'hsmcloud payshield credential claim "
            f"{_args(cred.resource_group, cred.name)}'.")
    return Management(name=cred.name, address=ep["address"], port=ep["ports"]["management"],
                      token=token or cred.token, unauthorized_hint=hint)


def claim(client: Client, resource_group: str, name: str, ep: dict,
          store: CredentialStore | None = None) -> SavedCredential:
    """Claim the payment HSM's management credential with a token made (and kept) here."""
    store = store or CredentialStore()
    pending = SavedCredential(subscription=client.sub, resource_group=resource_group, name=name,
                              serial=ep["serial"], token=secrets.token_urlsafe(32))
    store.save(pending)  # first: if the answer is lost, the next command repeats the claim with it
    return confirm_claim(client, pending, store)


def confirm_claim(client: Client, pending: SavedCredential, store: CredentialStore) -> SavedCredential:
    """Send the claim of `pending` (the same token again is accepted) and record it as confirmed."""
    rg, name = pending.resource_group, pending.name
    try:
        answer = client.post(client.hsm_path(rg, name) + "/managementCredential",
                             {"tokenSha256": token_sha256(pending.token)}, params={"api-version": HSM_API}) or {}
    except CliError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            store.delete(pending)  # refused: the device did not take this token
        if exc.code == "ManagementCredentialAlreadyIssued":
            raise missing_credential(name, store.path_of(pending), issued=None) from None
        raise
    if not answer.get("issuedAt"):
        raise CliError("InvalidResponse", f"The service confirmed no claim for payment HSM '{name}'.")
    confirmed = pending.claimed(answer["issuedAt"])
    store.save(confirmed)
    return confirmed


def missing_credential(name: str, path: Path, *, issued: str | None) -> CliError:
    when = f" (issued {issued})" if issued else ""
    return CliError("NoManagementCredential",
                    f"Payment HSM '{name}' has a management credential{when}, but it is not saved here "
                    f"({path}): copy that file from the machine that claimed it (or point "
                    f"{CLIENT_HOME_ENV} there). If it is lost, the device cannot be opened again: ask the provider "
                    "to force delete the HSM (this erases all its content) and create it again.")


def saved_credential(client: Client, resource_group: str, name: str, ep: dict, *, claim_if_unclaimed: bool = True,
                     store: CredentialStore | None = None) -> SavedCredential:
    """The tenant's credential for the payment HSM `ep`: saved here, or claimed now if nobody holds one."""
    store = store or CredentialStore()
    issued = ep.get("managementCredentialIssuedAt")
    saved = store.load(subscription=client.sub, resource_group=resource_group, name=name, serial=ep["serial"])
    if saved is not None and saved.issued_at is None:
        return confirm_claim(client, saved, store)  # a claim whose answer was lost
    if saved is None or saved.issued_at != issued:
        # Nothing saved, or saved for an earlier hand-over of this device (a recycled device).
        if issued is None and claim_if_unclaimed:
            return claim(client, resource_group, name, ep, store)
        if issued is None:
            raise CliError("NoManagementCredential", f"Payment HSM '{name}' has no management credential yet: claim "
                                                     "it with 'hsmcloud payshield credential claim "
                                                     f"{_args(resource_group, name)}'.")
        path = store.path_for(subscription=client.sub, resource_group=resource_group, name=name, serial=ep["serial"])
        raise missing_credential(name, path, issued=issued)
    if saved.next_token is not None:
        return settle_rotation(ep, saved, store)
    return saved


def settle_rotation(ep: dict, saved: SavedCredential, store: CredentialStore) -> SavedCredential:
    """A rotation whose answer was lost: keep whichever token the device takes."""
    with management_for(ep, saved, token=saved.next_token, store=store) as m:
        try:
            m.json("GET", "/health")
        except CliError as exc:
            if exc.status != 401:
                raise
            return _save(store, saved.rotation_dropped())
    return _save(store, saved.rotated())


def rotate(ep: dict, saved: SavedCredential, store: CredentialStore | None = None) -> SavedCredential:
    """A new token for the device, made here; the device drops the old one. The service never sees either."""
    store = store or CredentialStore()
    pending = saved.rotating(secrets.token_urlsafe(32))
    store.save(pending)
    with management_for(ep, saved, store=store) as m:
        try:
            m.json("POST", "/tenant/credential", body={"token_sha256": token_sha256(pending.next_token)})
        except CliError as exc:
            if exc.status is not None:  # refused: the old token stays the one
                store.save(saved)
            raise
    return _save(store, pending.rotated())


def _save(store: CredentialStore, cred: SavedCredential) -> SavedCredential:
    store.save(cred)
    return cred


def connect(client: Client, resource_group: str, name: str) -> Management:
    """A management client for the payment HSM `name` in `resource_group`, as its tenant."""
    ep = endpoints(client, resource_group, name)
    store = CredentialStore()
    return management_for(ep, saved_credential(client, resource_group, name, ep, store=store), store=store)
