"""ARM paths are case-insensitive: fold their fixed segments to one spelling before routing."""
from __future__ import annotations

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


class CanonicalPathMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = canonical_path(scope["path"])
            if path != scope["path"]:
                scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)
