"""Which api-versions each resource provider of the ARM surface accepts."""
from __future__ import annotations

import re

from hsmcloud.errors import InvalidRequest

HSM_API_VERSIONS = ("2018-10-31-preview", "2021-11-30", "2024-06-30-preview", "2025-03-31")
# Versions whose references use `resourceId` rather than `id`.
RESOURCE_ID_VERSIONS = ("2024-06-30-preview", "2025-03-31")
# Microsoft.Network and Microsoft.Resources accept any dated version (clients of every vintage use
# them); these are the ones the providers list advertises, newest first.
NETWORK_API_VERSIONS = ("2024-05-01", "2023-09-01", "2022-09-01", "2022-01-01", "2021-05-01")
RESOURCES_API_VERSIONS = ("2024-11-01", "2022-12-01", "2022-09-01", "2021-04-01", "2020-01-01")
_DATED = re.compile(r"^20(1[5-9]|2\d)-(0[1-9]|1[0-2])-([0-2]\d|3[01])(-preview)?$")


def require_api_version(value: str | None, namespace: str) -> str:
    if not value:
        raise InvalidRequest("The api-version query parameter (?api-version=) is required for all requests.",
                             code="MissingApiVersionParameter")
    if namespace == "Microsoft.HardwareSecurityModules":
        if value not in HSM_API_VERSIONS:
            raise InvalidRequest(
                f"The resource type 'dedicatedHSMs' could not be found for api version '{value}'. The supported "
                f"api-versions are '{', '.join(HSM_API_VERSIONS)}'.", code="InvalidApiVersionParameter")
        return value
    if not _DATED.match(value):
        raise InvalidRequest(f"The api-version '{value}' is invalid for {namespace}: use a dated version such as "
                             "2023-09-01.", code="InvalidApiVersionParameter")
    return value


def uses_resource_id(api_version: str) -> bool:
    return api_version in RESOURCE_ID_VERSIONS


def has_system_data(api_version: str) -> bool:
    return api_version != "2018-10-31-preview"
