"""How `hsmcloud payshield ...` reaches a payment HSM: its endpoints from the service, then the
appliance's management REST API on its loopback address.

The service (ARM side) hands a tenant the appliance's address, ports and management credential
(`GET .../dedicatedHSMs/{name}/endpoints`); the management API is plain HTTP JSON on
`http://<address>:<ports.management>` with `Authorization: Bearer <managementToken>`. Every
failure here is a `CliError`, so the command wrapper prints it as one `error: <code>: <message>` line."""
from __future__ import annotations

import ipaddress
from typing import Any

import httpx

from hsmcloud.cli.client import HSM_API, Client, CliError, _is_loopback_host, one_line

PAYMENT_KIND = "payshield"


class Management:
    """A thin HTTP client for one payShield appliance's management API, as its tenant."""

    def __init__(self, *, name: str, address: str, port: int, token: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        if not _is_loopback_host(address):
            raise CliError("InvalidEndpoint", f"The appliance address '{address}' of '{name}' is not a loopback "
                                              "address: hsmcloud only talks to appliances on 127.0.0.0/8 (or ::1).")
        host = f"[{address}]" if _is_ipv6(address) else address
        self.name = name
        self.url = f"http://{host}:{port}"
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
            raise management_error(resp, self.name)
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


def management_error(resp: httpx.Response, name: str) -> CliError:
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
    if resp.status_code == 401:
        message = (f"{message} The appliance no longer accepts the management credential of payment HSM "
                   f"'{name}': a released device holds no tenant credential; delete the HSM ('hsmcloud hsm "
                   "delete') and create a new one.")
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
    if not data.get("address") or not isinstance(ports.get("management"), int):
        raise CliError("InvalidResponse", f"The service gave no management endpoint for payment HSM '{name}'.")
    if not data.get("managementToken"):
        raise CliError("NoManagementCredential", f"The service holds no management credential for payment HSM "
                                                 f"'{name}'.")
    return data


def connect(client: Client, resource_group: str, name: str) -> Management:
    """A management client for the payment HSM `name` in `resource_group`."""
    ep = endpoints(client, resource_group, name)
    return Management(name=name, address=ep["address"], port=ep["ports"]["management"], token=ep["managementToken"])
