"""The published OpenAPI document describes what the ARM routes really answer and take."""
from __future__ import annotations

from fastapi.openapi.models import OpenAPI

from hsmcloud.arm.api_versions import HSM_API_VERSIONS

HSM = ("/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/Microsoft.HardwareSecurityModules/"
       "dedicatedHSMs/{name}")
QUOTA = "/subscriptions/{subscription_id}/providers/Microsoft.HardwareSecurityModules/locations/{location}/quota"


def refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def api_version_of(op: dict) -> dict:
    return next(p for p in op["parameters"] if p["name"] == "api-version")


def test_openapi_documents_real_responses_and_the_api_version(cloud):
    with cloud.http() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    OpenAPI.model_validate(doc)  # a well-formed OpenAPI 3 document
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs(doc))
    assert schemas["ErrorResponse"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}

    put = doc["paths"][HSM]["put"]
    assert {"200", "201", "default"} <= set(put["responses"])
    assert set(put["responses"]["201"]["headers"]) == {"Azure-AsyncOperation", "Retry-After"}
    assert put["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/DedicatedHsm"}
    version = api_version_of(put)
    assert version["in"] == "query" and version["required"] is True
    assert version["schema"]["enum"] == list(HSM_API_VERSIONS)

    delete = doc["paths"][HSM]["delete"]["responses"]
    assert set(delete) == {"202", "204", "default"}
    assert {"Azure-AsyncOperation", "Location", "Retry-After"} <= set(delete["202"]["headers"])
    status = doc["paths"][HSM.split("/resourceGroups/")[0] + "/providers/Microsoft.HardwareSecurityModules/locations/"
                          "{location}/operationStatuses/{op_id}"]["get"]["responses"]["200"]
    assert status["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OperationStatus"}

    # Every ARM route takes api-version (the quota routes optionally); the service never answers 422.
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if path.startswith(("/subscriptions", "/providers")):
                optional = path.endswith(("/quota", "/quotaRequests")) or method == "head"
                assert api_version_of(op)["required"] is not optional, (method, path)
    assert api_version_of(doc["paths"][QUOTA]["get"])["required"] is False
