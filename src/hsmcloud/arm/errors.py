"""The ARM error envelope: every error of the ARM surface is `{"error": {...}}` JSON."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hsmcloud.errors import HsmCloudError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, target: str | None = None,
                   details: list | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"code": code, "message": message}
    if target:
        body["target"] = target
    body["details"] = details or []
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(HsmCloudError)
    async def _domain(_req: Request, exc: HsmCloudError):
        return error_response(exc.status, exc.code, exc.message, target=exc.target, details=exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(404, "NotFound",
                                  "The requested path is not part of this ARM surface. Check the resource "
                                  "provider, resource type and path.")
        if exc.status_code == 405:
            return error_response(405, "MethodNotAllowed", "This HTTP method is not supported on this path.")
        return error_response(exc.status_code, "HttpError", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        return error_response(400, "InvalidRequestContent", f"The request is invalid: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "InternalServerError", "The server hit an unexpected error; nothing was changed "
                              "by this request. Retry, and report it if it persists.")
