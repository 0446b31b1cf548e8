"""The options every service command shares, and the one place errors become `error: ...` lines.

`@service_command(app, "name")` adds --state-dir, --endpoint, --ca, --insecure, --token, --json (and
--subscription for tenant commands) to a command and hands it a `Ctx` with a ready client."""
from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.exceptions import Abort, Exit, TyperException

from hsmcloud.cli.client import Client, CliError, resolve_auth, resolve_target
from hsmcloud.cli.output import Output

PANEL = "Connection"

_COMMON: list[tuple[str, Any, Any]] = [
    ("c_state_dir", Annotated[Optional[Path], typer.Option(
        "--state-dir", envvar="HSMCLOUD_STATE_DIR", rich_help_panel=PANEL, show_default=False,
        help="State directory of the service (its endpoint.json, CA and token key). Default ~/.hsmcloud.")], None),
    ("c_endpoint", Annotated[Optional[str], typer.Option(
        "--endpoint", envvar="HSMCLOUD_ENDPOINT", rich_help_panel=PANEL, show_default=False,
        help="ARM endpoint URL, e.g. https://127.0.0.1:8443 (default: from endpoint.json).")], None),
    ("c_ca", Annotated[Optional[Path], typer.Option(
        "--ca", rich_help_panel=PANEL, show_default=False,
        help="CA certificate to verify the endpoint with (default: the service's own).")], None),
    ("c_insecure", Annotated[bool, typer.Option(
        "--insecure", rich_help_panel=PANEL, help="Do not verify the endpoint's TLS certificate.")], False),
    ("c_token", Annotated[Optional[str], typer.Option(
        "--token", envvar="HSMCLOUD_TOKEN", rich_help_panel=PANEL, show_default=False,
        help="Bearer token (default: minted from the state directory's key).")], None),
    ("c_json", Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")], False),
]
_SUBSCRIPTION = ("c_subscription", Annotated[Optional[str], typer.Option(
    "--subscription", envvar="HSMCLOUD_SUBSCRIPTION", rich_help_panel=PANEL, show_default=False,
    help="Subscription id (a GUID) whose resources these are.")], None)


@dataclass
class Ctx:
    """What a command body gets: its output channel and (on first use) a client for the service."""

    out: Output
    options: dict
    operator: bool
    _client: Client | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return self.out.json_mode

    @property
    def client(self) -> Client:
        if self._client is None:
            o = self.options
            target = resolve_target(state_dir=o["c_state_dir"], endpoint=o["c_endpoint"], ca=o["c_ca"],
                                    insecure=o["c_insecure"])
            auth = resolve_auth(target, token=o["c_token"], subscription=o.get("c_subscription"),
                                operator=self.operator)
            self._client = Client(target, auth)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def confirm(question: str) -> None:
    """Ask on stderr; anything but yes (including end of input) cancels with one error line."""
    try:
        ok = typer.confirm(question, default=False, err=True)
    except Abort:
        import sys
        sys.stderr.write("\n")
        ok = False
    if not ok:
        raise CliError("Cancelled", "Nothing was changed (pass --yes to skip the question).")


def run_guarded(out: Output, body: Callable[[], Any]) -> Any:
    """Run a command body; anything that goes wrong becomes one error line and exit code 1."""
    try:
        return body()
    except CliError as exc:
        out.error(exc.code, exc.message)
        raise typer.Exit(1) from None
    except Abort:
        out.error("Cancelled", "Nothing was changed.")
        raise typer.Exit(1) from None
    except (Exit, TyperException):
        raise
    except KeyboardInterrupt:
        out.error("Interrupted", "Stopped waiting. Anything already started goes on in the service.")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - never show a traceback to a user
        out.error("InternalError", f"{exc.__class__.__name__}: {exc}")
        raise typer.Exit(1) from None


def service_command(app: typer.Typer, name: str, *, operator: bool = False, **command_kwargs) -> Callable:
    """Register `fn(cx: Ctx, **options)` as a command with the shared connection options."""

    def deco(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = []
        for p in list(inspect.signature(fn).parameters.values())[1:]:
            own.append(p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY))
        extra = list(_COMMON) + ([] if operator else [_SUBSCRIPTION])
        params = own + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
                        for n, a, d in extra]

        @functools.wraps(fn)
        def wrapper(**kwargs):
            common = {n: kwargs.pop(n, None) for n, _, _ in extra}
            out = Output(json_mode=bool(common.get("c_json")))
            cx = Ctx(out=out, options=common, operator=operator)
            try:
                return run_guarded(out, lambda: fn(cx, **kwargs))
            finally:
                cx.close()

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the new signature, not the body's
        app.command(name, **command_kwargs)(wrapper)
        return fn

    return deco
