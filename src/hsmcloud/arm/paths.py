"""ARM paths are case-insensitive: fold their fixed segments to one spelling before routing.

A name in a path is one segment: one that holds a '/' (sent as %2F, which routing would split)
or a control character is refused here with ARM's error, before any route sees it."""
from __future__ import annotations

from urllib.parse import unquote

from hsmcloud.arm.errors import error_response
from hsmcloud.controlplane.scope import check_group_name
from hsmcloud.errors import HsmCloudError, InvalidRequest

CANONICAL = {s.lower(): s for s in (
    "subscriptions", "resourceGroups", "providers", "resources", "operationResults", "operationStatuses",
    "locations", "operations", "Microsoft.HardwareSecurityModules", "dedicatedHSMs",
    "outboundNetworkDependenciesEndpoints", "Microsoft.Network", "virtualNetworks", "subnets",
    "virtualNetworkGateways", "networkInterfaces", "Microsoft.Resources", "quotaRequests", "endpoints",
    "managementCredential",
)}


def canonical_path(path: str) -> str:
    parts = path.split("/")
    out = []
    for i, part in enumerate(parts):
        # Names sit after a keyword; only keyword positions are folded so a group named
        # "Subnets" keeps its own spelling.
        prev = parts[i - 1].lower() if i > 0 else ""
        is_name = prev in {"subscriptions", "resourcegroups", "dedicatedhsms", "virtualnetworks", "subnets",
                           "virtualnetworkgateways", "networkinterfaces", "locations", "operationresults",
                           "operationstatuses", "quotarequests"}
        out.append(part if is_name else CANONICAL.get(part.lower(), part))
    return "/".join(out)


def check_segments(raw_path: str) -> None:
    """Refuse a path segment no name can be: '/' inside it (%2F) or a control character."""
    segments = raw_path.split("/")
    for i, raw in enumerate(segments):
        name = unquote(raw)
        if "/" not in name and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            continue
        if i and segments[i - 1].lower() == "resourcegroups":
            check_group_name(name)
        raise InvalidRequest(f"The name '{name}' in the request path is invalid: names cannot contain '/' or "
                             "control characters.", code="InvalidResourceName")


class CanonicalPathMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            try:
                check_segments(raw.decode("latin-1") if raw else scope["path"])
            except HsmCloudError as exc:
                await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
                return
            path = canonical_path(scope["path"])
            if path != scope["path"]:
                scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)
