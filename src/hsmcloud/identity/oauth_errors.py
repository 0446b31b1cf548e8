"""Errors of the token endpoint, one class per failure.

Each carries OAuth 2.0's `error` code, an AADSTS number (Entra's for the same failure) and the
HTTP status; `arm/routes_identity.py` writes them in Entra's error JSON, which MSAL and
azure-identity show to the user."""
from __future__ import annotations


class OAuthError(Exception):
    status = 400
    error = "invalid_request"
    aadsts = 900144

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def description(self) -> str:
        return f"AADSTS{self.aadsts}: {self.message}"


class MissingParameter(OAuthError):
    """A required form field is missing or malformed."""


class TenantNotFound(OAuthError):
    error = "invalid_tenant"
    aadsts = 90002


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    aadsts = 70003


class NoClientCredential(OAuthError):
    error = "invalid_client"
    aadsts = 7000218


class ApplicationNotFound(OAuthError):
    error = "unauthorized_client"
    aadsts = 700016


class InvalidClientSecret(OAuthError):
    status = 401
    error = "invalid_client"
    aadsts = 7000215


class ClientCredentialExpired(OAuthError):
    status = 401
    error = "invalid_client"
    aadsts = 7000222


class WrongCredentialType(OAuthError):
    """A secret for a certificate principal, or an assertion for a secret one."""

    status = 401
    error = "invalid_client"
    aadsts = 7000215


class InvalidClientAssertion(OAuthError):
    status = 401
    error = "invalid_client"
    aadsts = 700027


class AssertionOutOfTime(OAuthError):
    status = 401
    error = "invalid_client"
    aadsts = 700024


class AssertionClientMismatch(OAuthError):
    status = 401
    error = "invalid_client"
    aadsts = 700021


class InvalidScope(OAuthError):
    error = "invalid_scope"
    aadsts = 70011


class ResourceNotFound(OAuthError):
    error = "invalid_resource"
    aadsts = 500011


class InteractiveFlowNotSupported(OAuthError):
    error = "unsupported_response_type"
    aadsts = 700054
