"""ARM list pages: `{"value": [...], "nextLink": ...}` with an opaque $skiptoken."""
from __future__ import annotations

import base64
from urllib.parse import urlencode

from fastapi import Request

from hsmcloud.errors import InvalidRequest

MAX_PAGE = 100


def page(request: Request, items: list, render) -> dict:
    top_raw = request.query_params.get("$top")
    top = MAX_PAGE
    if top_raw is not None:
        try:
            top = int(top_raw)
        except ValueError:
            raise InvalidRequest(f"$top must be an integer, not '{top_raw}'.", code="InvalidTopParameter") from None
        if top < 1:
            raise InvalidRequest("$top must be at least 1.", code="InvalidTopParameter")
        top = min(top, MAX_PAGE)
    skip = 0
    token = request.query_params.get("$skiptoken")
    if token:
        try:
            skip = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("$skiptoken is not valid; follow nextLink as given.",
                                 code="InvalidSkipToken") from None
    chunk = items[skip:skip + top]
    out = {"value": [render(i) for i in chunk]}
    if skip + top < len(items):
        params = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
        params["$skiptoken"] = base64.urlsafe_b64encode(str(skip + top).encode()).decode().rstrip("=")
        out["nextLink"] = f"{str(request.base_url).rstrip('/')}{request.url.path}?{urlencode(params)}"
    return out
