"""The published OpenAPI document (/openapi.json): the framework's schema of the routes, completed with
what the routes really answer (ARM error envelope, 201/202/204, long-running-operation headers) and the
api-version query parameter, which the routes read themselves and so FastAPI cannot see."""
from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hsmcloud.arm.api_versions import HSM_API_VERSIONS

REF = "#/components/schemas/"


def _json(schema_name: str | None = None) -> dict:
    schema = {"$ref": REF + schema_name} if schema_name else {"type": "object"}
    return {"application/json": {"schema": schema}}


def _header(description: str, schema_type: str = "string") -> dict:
    return {"description": description, "schema": {"type": schema_type}}


ASYNC_OPERATION = _header("URL of the operation's status resource (operationStatuses): poll it until `status` is "
                          "Succeeded or Failed.")
LOCATION = _header("URL of the operation's result (operationResults): 202 while it runs, then 200, or 409 with the "
                   "error.")
RETRY_AFTER = _header("Seconds to wait before the next poll.", "integer")

SCHEMAS = {
    "ErrorDetail": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string", "description": "Stable error code, e.g. QuotaExceeded."},
                       "message": {"type": "string", "description": "What went wrong and how to fix it."},
                       "target": {"type": "string", "description": "The request field at fault."},
                       "details": {"type": "array", "items": {"$ref": REF + "ErrorDetail"}}}},
    "ErrorResponse": {
        "type": "object", "required": ["error"], "description": "ARM's error envelope, on every error.",
        "properties": {"error": {"$ref": REF + "ErrorDetail"}}},
    "OperationStatus": {
        "type": "object", "required": ["id", "name", "status", "startTime"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                       "status": {"type": "string", "enum": ["InProgress", "Succeeded", "Failed"]},
                       "startTime": {"type": "string", "format": "date-time"},
                       "endTime": {"type": "string", "format": "date-time"},
                       "error": {"$ref": REF + "ErrorDetail"},
                       "properties": {"type": "object", "properties": {"kind": {"type": "string"},
                                                                       "step": {"type": "string"}}}}},
    "Reference": {"type": "object", "description": "`resourceId` from 2024-06-30-preview on, `id` before.",
                  "properties": {"resourceId": {"type": "string"}, "id": {"type": "string"}}},
    "NetworkProfile": {
        "type": "object",
        "properties": {"subnet": {"$ref": REF + "Reference"},
                       "networkInterfaces": {"type": "array", "items": {"type": "object", "properties": {
                           "resourceId": {"type": "string", "readOnly": True},
                           "id": {"type": "string", "readOnly": True},
                           "privateIpAddress": {"type": "string"}}}}}},
    "DedicatedHsm": {
        "type": "object", "required": ["location", "sku", "properties"],
        "properties": {
            "id": {"type": "string", "readOnly": True}, "name": {"type": "string", "readOnly": True},
            "type": {"type": "string", "readOnly": True}, "location": {"type": "string"},
            "sku": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            "zones": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "properties": {"type": "object", "required": ["networkProfile"], "properties": {
                "networkProfile": {"$ref": REF + "NetworkProfile"},
                "managementNetworkProfile": {"$ref": REF + "NetworkProfile"},
                "stampId": {"type": "string"},
                "statusMessage": {"type": "string", "readOnly": True},
                "provisioningState": {"type": "string", "readOnly": True, "enum": [
                    "CheckingQuota", "Allocating", "Connecting", "Provisioning", "Succeeded", "Failed", "Deleting"]},
                "error": {"allOf": [{"$ref": REF + "ErrorDetail"}], "readOnly": True,
                          "description": "hsmcloud extension: the failure, while provisioningState is Failed."}}},
            "systemData": {"type": "object", "readOnly": True}}},
}

# (method, path pattern) -> the success answers of that route; the first match wins, the rest answer 200.
_HSM = r"/dedicatedHSMs/\{name\}$"
RESPONSES: list[tuple[str, str, dict]] = [
    ("put", _HSM, {
        "201": {"description": "Created; the create runs on (poll Azure-AsyncOperation).", "content": _json(
            "DedicatedHsm"), "headers": {"Azure-AsyncOperation": ASYNC_OPERATION, "Retry-After": RETRY_AFTER}},
        "200": {"description": "An existing HSM: its tags updated, or its failed deployment rerun (then with "
                               "Azure-AsyncOperation and Retry-After).", "content": _json("DedicatedHsm"),
                "headers": {"Azure-AsyncOperation": ASYNC_OPERATION, "Retry-After": RETRY_AFTER}}}),
    ("get", _HSM, {"200": {"description": "The HSM.", "content": _json("DedicatedHsm")}}),
    ("patch", _HSM, {"200": {"description": "Tags updated.", "content": _json("DedicatedHsm")}}),
    ("delete", _HSM, {
        "202": {"description": "Deletion accepted; poll Azure-AsyncOperation or Location.",
                "headers": {"Azure-AsyncOperation": ASYNC_OPERATION, "Location": LOCATION,
                            "Retry-After": RETRY_AFTER}},
        "204": {"description": "There is no such HSM: nothing to delete."}}),
    ("get", r"/operationStatuses/\{op_id\}$", {
        "200": {"description": "The operation's status (Retry-After while InProgress).",
                "content": _json("OperationStatus"), "headers": {"Retry-After": RETRY_AFTER}}}),
    ("get", r"/locations/\{location\}/operationResults/\{op_id\}$", {
        "202": {"description": "Still running.", "headers": {"Location": LOCATION, "Retry-After": RETRY_AFTER}},
        "200": {"description": "Succeeded (empty body)."},
        "409": {"description": "Failed: the operation's error.", "content": _json("ErrorResponse")}}),
    ("put", r"/providers/Microsoft\.Network/", {
        "201": {"description": "Created (synchronously).", "content": _json()},
        "200": {"description": "Updated.", "content": _json()}}),
    ("delete", r"/providers/Microsoft\.Network/", {
        "200": {"description": "Deleted."}, "204": {"description": "There was nothing to delete."}}),
    ("put", r"/resourceGroups/\{rg\}$", {
        "201": {"description": "Created.", "content": _json()}, "200": {"description": "Updated.",
                                                                         "content": _json()}}),
    ("head", r"/resourceGroups/\{rg\}$", {
        "204": {"description": "The group exists."}, "404": {"description": "It does not."}}),
    ("delete", r"/resourceGroups/\{rg\}$", {
        "202": {"description": "Deleted (its HSMs orphaned); poll Location.",
                "headers": {"Location": LOCATION, "Retry-After": RETRY_AFTER}}}),
    ("get", r"^/subscriptions/\{subscription_id\}/operationResults/\{op_id\}$", {
        "202": {"description": "Still running."}, "200": {"description": "Done.", "content": _json()}}),
    ("post", r"/quotaRequests$", {"201": {"description": "The request, Pending.", "content": _json()}}),
    ("post", r"/forceDelete$", {"202": {"description": "Deletion started.", "content": _json()}}),
]
# Routes that take no api-version (or an optional one).
OPTIONAL_VERSION = (r"/quota$", r"/quotaRequests$")


def _api_version_parameter(path: str, method: str) -> dict | None:
    if not path.startswith(("/subscriptions", "/providers")):
        return None  # /operator, /healthz
    if "/providers/Microsoft.HardwareSecurityModules" in path:
        schema = {"type": "string", "enum": list(HSM_API_VERSIONS)}
    else:
        schema = {"type": "string", "pattern": r"^20\d\d-\d\d-\d\d(-preview)?$", "example": "2023-09-01"}
    optional = method == "head" or any(re.search(p, path) for p in OPTIONAL_VERSION)
    return {"name": "api-version", "in": "query", "required": not optional, "schema": schema,
            "description": "The API version of the resource provider." + (" Optional here." if optional else "")}


def describe(schema: dict) -> dict:
    """Complete the generated schema in place with the real answers and parameters."""
    schema.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which the service never sends
        schema["components"]["schemas"].pop(name, None)
    for path, item in schema["paths"].items():
        for method, op in item.items():
            success = next((r for m, p, r in RESPONSES if m == method and re.search(p, path)),
                           {"200": {"description": "OK.", "content": _json()}})
            op["responses"] = {**success, "default": {"description": "An error, in ARM's envelope.",
                                                      "content": _json("ErrorResponse")}}
            version = _api_version_parameter(path, method)
            if version is not None:
                op["parameters"] = [p for p in op.get("parameters", []) if p.get("name") != "api-version"]
                op["parameters"].append(version)
            if method in ("put", "patch") and re.search(_HSM, path):
                op["requestBody"] = {"required": True, "content": _json(
                    "DedicatedHsm" if method == "put" else None)}
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = describe(get_openapi(
                title=app.title, version=app.version, routes=app.routes,
                description="ARM-compatible Microsoft.HardwareSecurityModules/dedicatedHSMs, the Microsoft.Network "
                            "and Microsoft.Resources subset it needs, and the /operator surface."))
        return app.openapi_schema

    app.openapi = openapi
