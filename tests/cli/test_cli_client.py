"""The HTTP client on its own: paging, operation polling and error envelopes (no service needed)."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hsmcloud.cli.client import Auth, Client, CliError, Target


def client_for(handler) -> Client:
    target = Target(url="http://127.0.0.1:9", verify=False, state_dir=Path("/nonexistent"))
    return Client(target, Auth(token="t", subscription="00000000-0000-0000-0000-000000000001"),
                  transport=httpx.MockTransport(handler))


def test_pages_follow_next_link_and_stop_at_limit():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        assert request.headers["Authorization"] == "Bearer t"
        n = int(request.url.params.get("$skiptoken", "0"))
        body = {"value": [{"name": f"h{n}"}, {"name": f"h{n + 1}"}]}
        if n < 4:
            # An absolute nextLink on another origin is still asked of our own endpoint.
            body["nextLink"] = f"https://management.example/subscriptions/x/list?$skiptoken={n + 2}"
        return httpx.Response(200, json=body)

    with client_for(handler) as c:
        assert [x["name"] for x in c.pages("/subscriptions/x/list")] == ["h0", "h1", "h2", "h3", "h4", "h5"]
        assert all(u.startswith("http://127.0.0.1:9/") for u in seen)
        seen.clear()
        assert len(c.pages("/subscriptions/x/list", limit=3)) == 3
        assert len(seen) == 2


def test_wait_operation_polls_until_not_202():
    answers = iter([202, 202, 200])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        status = next(answers)
        headers = {"Location": "http://127.0.0.1:9/op/next", "Retry-After": "1"} if status == 202 else {}
        return httpx.Response(status, headers=headers)

    with client_for(handler) as c:
        assert c.wait_operation("http://127.0.0.1:9/op/first", interval=0, timeout=30).status_code == 200
    assert calls == ["/op/first", "/op/next", "/op/next"]


def test_failed_operation_is_an_arm_error():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"code": "HsmNotZeroized", "message": "Zeroize it\nfirst."}})

    with client_for(handler) as c, pytest.raises(CliError) as err:
        c.wait_operation("/op", interval=0, timeout=30)
    assert (err.value.code, err.value.message, err.value.status) == ("HsmNotZeroized", "Zeroize it first.", 409)


def test_non_json_error_still_reads_as_one_line():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n<b>Bad gateway</b>\n</html>")

    with client_for(handler) as c, pytest.raises(CliError) as err:
        c.get("/x")
    assert err.value.code == "Http502" and "\n" not in err.value.message
