"""How the command line reaches a running hsmcloud service: endpoint, TLS trust, token, HTTP, polling.

Everything here raises `CliError` for anything the user should read; the command wrapper in
`hsmcloud.cli.common` turns it into one `error: <code>: <message>` line and exit code 1."""
from __future__ import annotations

import ipaddress
import json
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from hsmcloud import resource_ids as ids

HSM_API = "2025-03-31"
NETWORK_API = "2023-09-01"
GROUPS_API = "2022-09-01"
HSM_DELEGATION = f"{ids.HSM_PROVIDER}/{ids.HSM_TYPE}"
# Written by `hsmcloud up` (hsmcloud.server.write_endpoint); read here without importing the server stack.
ENDPOINT_FILE = "endpoint.json"
KEY_FILE = Path("identity") / "token-signing-key.pem"
DEFAULT_POLL_INTERVAL = 1.0


class CliError(Exception):
    """Something the user reads as `error: <code>: <message>`."""

    def __init__(self, code: str, message: str, *, status: int | None = None, body: Any = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.body = body


def arm_path(*segments: str) -> str:
    """`/seg/seg/...` with every segment percent-encoded: the one place a request path is built.

    A user's value (a group named 'rg?x=1', a name with '/' or control characters) thus stays one
    path segment and reaches the service as given, to be accepted or refused there."""
    parts = []
    for segment in segments:
        segment = str(segment)
        if not segment:
            raise CliError("InvalidArgument", "An empty name or id cannot be part of a request: give a value.")
        encoded = quote(segment, safe="")
        if segment in (".", ".."):
            encoded = segment.replace(".", "%2E")  # would be resolved away as a relative path otherwise
        parts.append(encoded)
    return "/" + "/".join(parts)


def default_state_dir() -> Path:
    """The state directory the service uses by default (env HSMCLOUD_STATE_DIR, else ~/.hsmcloud)."""
    return Path(os.environ.get("HSMCLOUD_STATE_DIR") or "~/.hsmcloud").expanduser()


def poll_interval(explicit: float | None = None) -> float | None:
    """The pause between polls: --interval, else env HSMCLOUD_POLL_INTERVAL, else None (Retry-After or 1 s)."""
    if explicit is not None:
        if explicit < 0:
            raise CliError("InvalidInterval", "--interval must be zero or more seconds.")
        return explicit
    raw = os.environ.get("HSMCLOUD_POLL_INTERVAL")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise CliError("InvalidInterval", f"HSMCLOUD_POLL_INTERVAL must be a number of seconds, not '{raw}'.") \
                from None
        if value < 0:
            raise CliError("InvalidInterval", "HSMCLOUD_POLL_INTERVAL must be zero or more seconds.")
        return value
    return None


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_subscription(value: str) -> str:
    from hsmcloud.errors import HsmCloudError
    from hsmcloud.identity.tokens import normalize_subscription_id
    try:
        return normalize_subscription_id(value)
    except HsmCloudError as exc:
        raise CliError(exc.code, exc.message) from None


@dataclass
class Target:
    """Where the service is and how to trust it."""

    url: str
    verify: ssl.SSLContext | bool
    state_dir: Path


def resolve_target(*, state_dir: Path | None, endpoint: str | None, ca: Path | None, insecure: bool) -> Target:
    state_dir = (state_dir or default_state_dir()).expanduser()
    ca_file: str | None = str(ca.expanduser()) if ca else None
    if endpoint:
        url = endpoint.rstrip("/")
        if ca_file is None and not insecure:
            # The service's own CA, if this state directory belongs to it; else the system store.
            info = _read_endpoint_file(state_dir, required=False)
            if info and info.get("ca") and info.get("endpoint", "").rstrip("/") == url:
                ca_file = info["ca"]
            elif (state_dir / "tls" / "ca.pem").exists():
                ca_file = str(state_dir / "tls" / "ca.pem")
    else:
        info = _read_endpoint_file(state_dir, required=True)
        url = str(info.get("endpoint") or "").rstrip("/")
        if not url:
            raise CliError("InvalidEndpointFile", f"{state_dir / ENDPOINT_FILE} has no \"endpoint\"; restart the "
                                                  "service with 'hsmcloud up' or pass --endpoint URL.")
        if ca_file is None and info.get("ca"):
            ca_file = info["ca"]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError("InvalidEndpoint", f"'{url}' is not an http(s) URL such as https://127.0.0.1:8443.")
    if not _is_loopback_host(parts.hostname):
        raise CliError("InvalidEndpoint", f"'{url}' is not a loopback address: hsmcloud only talks to services on "
                                          "127.0.0.0/8 (or ::1, localhost).")
    verify: ssl.SSLContext | bool = True
    if parts.scheme == "https":
        if insecure:
            verify = False
        elif ca_file:
            if not Path(ca_file).exists():
                raise CliError("CaCertificateNotFound", f"The CA certificate {ca_file} does not exist; pass --ca FILE "
                                                        "or --insecure.")
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise CliError("InvalidCaCertificate", f"Cannot load the CA certificate {ca_file}: {exc}.") from None
    return Target(url=url, verify=verify, state_dir=state_dir)


def _read_endpoint_file(state_dir: Path, *, required: bool) -> dict | None:
    path = state_dir / ENDPOINT_FILE
    if not path.exists():
        if not required:
            return None
        raise CliError("ServiceNotRunning", f"No hsmcloud service found for state directory {state_dir} (there is no "
                                            f"{ENDPOINT_FILE}): start it with 'hsmcloud up --state-dir {state_dir}', "
                                            "or pass --endpoint URL.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError("InvalidEndpointFile", f"Cannot read {path}: {exc}.") from None
    if not isinstance(data, dict):
        raise CliError("InvalidEndpointFile", f"{path} is not a JSON object.")
    return data


def _unverified_claims(token: str) -> dict:
    try:
        import jwt
        return jwt.decode(token, options={"verify_signature": False})
    except Exception:  # noqa: BLE001 - any token the library cannot read simply has no claims for us
        return {}


def mint_token(state_dir: Path, *, subscription: str | None = None, operator: bool = False) -> str:
    """A bearer token signed with the service's key in the state directory (what 'hsmcloud token' does)."""
    key = state_dir / KEY_FILE
    if not key.exists():
        raise CliError("NoSigningKey", f"There is no token signing key in {state_dir} ({KEY_FILE}), so no token can be "
                                       "made here: pass --state-dir of the service, or --token (env HSMCLOUD_TOKEN) "
                                       "with a token from 'hsmcloud token'.")
    from hsmcloud.errors import HsmCloudError
    from hsmcloud.identity.tokens import TokenAuthority
    try:
        return TokenAuthority(state_dir).issue(subscription_id=subscription, operator=operator)
    except HsmCloudError as exc:
        raise CliError(exc.code, exc.message) from None
    except (OSError, ValueError) as exc:
        raise CliError("NoSigningKey", f"Cannot use the token signing key in {state_dir}: {exc}.") from None


@dataclass
class Auth:
    token: str
    subscription: str | None = None


def resolve_auth(target: Target, *, token: str | None, subscription: str | None, operator: bool) -> Auth:
    if subscription:
        subscription = normalize_subscription(subscription)
    if token:
        token = token.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not operator and not subscription:
            sid = _unverified_claims(token).get("sid")
            subscription = normalize_subscription(sid) if sid else None
        if not operator and not subscription:
            raise CliError("SubscriptionRequired", "Give --subscription <uuid> (or set HSMCLOUD_SUBSCRIPTION): the "
                                                   "token does not name one.")
        return Auth(token=token, subscription=subscription)
    if operator:
        return Auth(token=mint_token(target.state_dir, operator=True))
    if not subscription:
        raise CliError("SubscriptionRequired", "Give --subscription <uuid> (or set HSMCLOUD_SUBSCRIPTION) to say "
                                               "whose resources these are.")
    return Auth(token=mint_token(target.state_dir, subscription=subscription), subscription=subscription)


def arm_error(resp: httpx.Response) -> CliError:
    """The ARM error envelope of a response as a CliError (with a readable fallback for anything else)."""
    body: Any = None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or f"Http{resp.status_code}")
        message = str(err.get("message") or resp.reason_phrase or "")
        return CliError(code, one_line(message), status=resp.status_code, body=body)
    text = one_line(resp.text or resp.reason_phrase or "")[:300]
    return CliError(f"Http{resp.status_code}", text or f"The service answered HTTP {resp.status_code}.",
                    status=resp.status_code, body=body)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class Client:
    """A thin HTTP client for one service and one caller."""

    def __init__(self, target: Target, auth: Auth, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        self.target = target
        self.auth = auth
        self.subscription = auth.subscription
        kwargs: dict[str, Any] = {}
        if transport is not None:
            kwargs["transport"] = transport
        # trust_env=False: never route through a proxy from the environment; the service is on loopback.
        self._http = httpx.Client(base_url=target.url, verify=target.verify, timeout=timeout, trust_env=False,
                                  headers={"Authorization": f"Bearer {auth.token}",
                                           "User-Agent": "hsmcloud-cli"}, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- paths ------------------------------------------------------------------------------
    @property
    def sub(self) -> str:
        if not self.subscription:
            raise CliError("SubscriptionRequired", "Give --subscription <uuid> (or set HSMCLOUD_SUBSCRIPTION).")
        return self.subscription

    def group_path(self, rg: str) -> str:
        return arm_path("subscriptions", self.sub, "resourceGroups", rg)

    def network_path(self, rg: str, kind: str, name: str | None = None) -> str:
        """One network resource of a kind (virtualNetworks, virtualNetworkGateways), or all of a group."""
        return self.group_path(rg) + arm_path("providers", ids.NETWORK_PROVIDER, kind, *([name] if name else []))

    def hsm_path(self, rg: str | None, name: str | None = None) -> str:
        """One HSM, the HSMs of a group, or (rg None) the HSMs of the subscription."""
        scope = self.group_path(rg) if rg is not None else arm_path("subscriptions", self.sub)
        return scope + arm_path("providers", ids.HSM_PROVIDER, ids.HSM_TYPE, *([name] if name is not None else []))

    def location_path(self, region: str) -> str:
        return arm_path("subscriptions", self.sub, "providers", ids.HSM_PROVIDER, "locations", region)

    # ---- requests ---------------------------------------------------------------------------
    def _local(self, url: str) -> str:
        """A URL the service handed out (nextLink, Location) as a path on our own endpoint."""
        parts = urlsplit(url)
        if not parts.scheme:
            return url
        return urlunsplit(("", "", parts.path, parts.query, ""))

    def send(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
             ok: tuple[int, ...] | None = None) -> httpx.Response:
        """One request; connection failures and non-success answers become CliError."""
        kwargs: dict[str, Any] = {}
        if params:
            kwargs["params"] = params
        if body is not None:
            kwargs["json"] = body
        try:
            resp = self._http.request(method, self._local(path), **kwargs)
        except httpx.ConnectError as exc:
            raise self._connect_error(exc) from None
        except httpx.TimeoutException:
            raise CliError("ServiceTimeout", f"The hsmcloud service at {self.target.url} did not answer in time; "
                                             "check that it is running ('hsmcloud up') and retry.") from None
        except httpx.HTTPError as exc:
            raise CliError("ServiceUnreachable", f"Cannot talk to the hsmcloud service at {self.target.url}: "
                                                 f"{one_line(str(exc)) or exc.__class__.__name__}.") from None
        if ok is None:
            good = 200 <= resp.status_code < 300
        else:
            good = resp.status_code in ok
        if not good:
            raise arm_error(resp)
        return resp

    def _connect_error(self, exc: Exception) -> CliError:
        text = str(exc)
        low = text.lower()
        if "certificate" in low or "ssl" in low or "tls" in low:
            return CliError("TlsVerificationFailed", f"The TLS certificate of {self.target.url} could not be verified "
                                                     f"({one_line(text)}): pass --ca <state-dir>/tls/ca.pem, or "
                                                     "--insecure.")
        return CliError("ServiceNotRunning", f"The hsmcloud service is not running at {self.target.url} "
                                             f"({one_line(text) or 'connection refused'}): start it with "
                                             "'hsmcloud up'.")

    def json(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
             ok: tuple[int, ...] | None = None) -> Any:
        resp = self.send(method, path, params=params, body=body, ok=ok)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise CliError("InvalidResponse", f"The service answered {method} {path} with something that is not "
                                              "JSON.") from None

    def get(self, path: str, *, params: dict | None = None) -> Any:
        return self.json("GET", path, params=params)

    def put(self, path: str, body: Any = None, *, params: dict | None = None) -> Any:
        return self.json("PUT", path, params=params, body=body)

    def post(self, path: str, body: Any = None, *, params: dict | None = None) -> Any:
        return self.json("POST", path, params=params, body=body)

    def patch(self, path: str, body: Any = None, *, params: dict | None = None) -> Any:
        return self.json("PATCH", path, params=params, body=body)

    def pages(self, path: str, *, params: dict | None = None, limit: int | None = None) -> list:
        """Every item of an ARM list, following nextLink (stops at `limit` items when given)."""
        out: list = []
        next_path: str | None = path
        next_params = params
        seen: set[str] = set()
        while next_path:
            data = self.json("GET", next_path, params=next_params) or {}
            out.extend(data.get("value") or [])
            if limit is not None and len(out) >= limit:
                return out[:limit]
            link = data.get("nextLink")
            if not link or link in seen:
                break
            seen.add(link)
            next_path, next_params = link, None
        return out

    # ---- long-running operations ------------------------------------------------------------
    def wait_operation(self, location: str, *, interval: float | None, timeout: float,
                       on_tick: Callable[[float], None] | None = None,
                       on_status: Callable[[dict], None] | None = None) -> httpx.Response:
        """Poll an ARM operation URL (a delete's Location) until it stops answering 202.

        `on_status` sees the JSON body of each 202 answer that has one (the operator's operations
        carry their step and state). Returns the final 2xx answer; a non-2xx answer there is the
        operation's ARM error."""
        start = time.monotonic()
        delay = 0.0
        while True:
            if delay:
                time.sleep(delay)
            resp = self.send("GET", location)
            if resp.status_code != 202:
                return resp
            if on_status and resp.content:
                try:
                    body = resp.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    on_status(body)
            if on_tick:
                on_tick(time.monotonic() - start)
            if time.monotonic() - start > timeout:
                raise CliError("WaitTimeout", f"The operation did not finish within {timeout:g} s; it goes on in the "
                                              "service. Check again later.")
            location = resp.headers.get("Location") or location
            delay = pause(interval, resp)


def pause(interval: float | None, resp: httpx.Response | None = None) -> float:
    """How long to wait before the next poll: the explicit interval, else Retry-After, else 1 s."""
    if interval is not None:
        return interval
    if resp is not None:
        try:
            after = float(resp.headers.get("Retry-After", ""))
            if after > 0:
                return min(after, 30.0)
        except ValueError:
            pass
    return DEFAULT_POLL_INTERVAL


@dataclass
class Poll:
    """A generic poll loop over a GET whose JSON carries a state; `states` collects what was seen."""

    fetch: Callable[[], dict]
    state_of: Callable[[dict], str | None]
    done: Callable[[str | None], bool]
    interval: float | None
    timeout: float
    states: list = field(default_factory=list)

    def run(self, on_state: Callable[[str | None, dict], None] | None = None) -> dict:
        start = time.monotonic()
        while True:
            body = self.fetch()
            state = self.state_of(body)
            if not self.states or self.states[-1] != state:
                self.states.append(state)
                if on_state:
                    on_state(state, body)
            if self.done(state):
                return body
            if time.monotonic() - start > self.timeout:
                raise CliError("WaitTimeout", f"Still {state} after {self.timeout:g} s; the operation goes on in the "
                                              "service. Check again later.")
            time.sleep(pause(self.interval))


def iter_kv(values: list[str] | None, *, option: str) -> Iterator[tuple[str, str]]:
    """`k=v` pairs from repeated options. One value may also hold several pairs separated by spaces
    ("Dept=hsm Env=dev", as az takes them) when every word is a pair; otherwise it is one pair whose
    value may contain spaces ("Owner=Jane Doe")."""
    for raw in values or []:
        words = raw.split()
        items = words if len(words) > 1 and all("=" in w and not w.startswith("=") for w in words) else [raw]
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CliError("InvalidArgument", f"{option} takes key=value pairs, not '{item}'.")
            yield key.strip(), value
