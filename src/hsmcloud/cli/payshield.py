"""`hsmcloud payshield ...`: the payment HSM (payShield 10K) as its tenant manages it.

Admin cards are local files (`card new`); everything else goes to the appliance's management REST
API, found through the service (`hsmcloud hsm endpoints`): LMKs from admin cards, the authorised
state, keys from clear components (key-loading device) and back (trusted management device),
host settings, TLS on the host ports (`host-tls`), logs and release. The management credential is the tenant's own (`credential`):
claimed on first use and kept in $HSMCLOUD_CLIENT_HOME, never by the service."""
from __future__ import annotations

import functools
import inspect
import subprocess
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.text import Text

from hsmcloud.cli.client import CliError
from hsmcloud.cli.common import Ctx, confirm, run_guarded, service_command
from hsmcloud.cli.output import Output
from hsmcloud.cli.credentials import CredentialStore, SavedCredential
from hsmcloud.cli.payshield_client import Management, claim, connect, endpoints, management_for, rotate, \
    saved_credential

app = typer.Typer(help="Payment HSMs (payShield 10K): admin cards, LMKs, authorised state, keys, settings, logs, "
                       "release.", no_args_is_help=True)
card_app = typer.Typer(help="Admin cards: files holding one LMK component each, protected by a PIN.",
                       no_args_is_help=True)
lmk_app = typer.Typer(help="Local Master Keys: form one from admin cards, list them.", no_args_is_help=True)
key_app = typer.Typer(help="Keys from clear components and back to components.", no_args_is_help=True)
credential_app = typer.Typer(help="Your management credential for the payment HSM: claimed once, kept in "
                                  "$HSMCLOUD_CLIENT_HOME (default ~/.hsmcloud-client), never by the provider.",
                             no_args_is_help=True)
app.add_typer(card_app, name="card")
app.add_typer(lmk_app, name="lmk")
app.add_typer(key_app, name="key")
app.add_typer(credential_app, name="credential")

Name = Annotated[str, typer.Option("--name", "-n", help="Name of the payment HSM.", show_default=False)]
Group = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.", show_default=False)]
Slot = Annotated[int, typer.Option("--slot", min=0, help="LMK slot (0, or 0-1 with an LMK2 licence).")]


# ---- local commands (no service) ---------------------------------------------------------------------
def local_command(app_: typer.Typer, name: str) -> Callable:
    """Register `fn(out: Output, **options)` with --json and the one-line error handling, no connection."""

    def deco(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(fn).parameters.values())[1:]]
        json_param = inspect.Parameter("c_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--json", help="Machine-readable JSON on stdout.")])
        params = own + [json_param]

        @functools.wraps(fn)
        def wrapper(**kwargs):
            out = Output(json_mode=bool(kwargs.pop("c_json", False)))
            return run_guarded(out, lambda: fn(out, **kwargs))

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the new signature, not the body's
        app_.command(name)(wrapper)
        return fn

    return deco


def _card_error(exc: Exception) -> CliError:
    return CliError("CardError", str(getattr(exc, "message", exc)))


def _prompt_pin(question: str, *, confirmation: bool) -> str:
    try:
        return typer.prompt(question, hide_input=True, confirmation_prompt=confirmation, err=True)
    except typer.Abort:
        sys.stderr.write("\n")
        raise CliError("Cancelled", "No PIN was given (pass it as --pin PIN, or --card FILE:PIN).") from None


@local_command(card_app, "new")
def card_new(out: Output,
             out_file: Annotated[Path, typer.Option("--out", "-o", help="The card file to write (never overwritten).",
                                                    show_default=False)],
             pin: Annotated[Optional[str], typer.Option("--pin", show_default=False,
                                                        help="The card's PIN, 4-64 characters (asked for when "
                                                             "omitted).")] = None):
    """Write a new admin card: a fresh random LMK component sealed under a PIN (no service needed)."""
    from hsmcloud.appliances.payshield import cards
    from hsmcloud.appliances.payshield.errors import CardError

    path = out_file.expanduser()
    if path.exists() or path.is_symlink():
        raise CliError("FileExists", f"{path} already exists; a card file is never overwritten. Choose another "
                                     "--out.")
    if pin is None:
        pin = _prompt_pin("Card PIN", confirmation=True)
    try:
        card = cards.create_card_file(path, pin)
    except CardError as exc:
        raise _card_error(exc) from None
    except FileExistsError:
        raise CliError("FileExists", f"{path} already exists; a card file is never overwritten.") from None
    except OSError as exc:
        raise CliError("CannotWriteCard", f"Cannot write {path}: {exc.strerror or exc}.") from None
    # Public fields only: the component itself stays sealed in the file.
    data = {"file": str(path), "card_id": card["card_id"], "variant_check_value": card["variant_check_value"],
            "keyblock_check_value": card["keyblock_check_value"]}
    work_tree = unignored_git_work_tree(path)
    if work_tree is not None:
        out.warn(f"{path} is inside the git work tree {work_tree} and not ignored there: a card file holds an LMK "
                 "component (sealed under its PIN) and must never be committed. Move it to a private directory "
                 "outside any repository (mkdir -m 700 ~/hsm-cards), or add it to .gitignore.")
    out.result(data, lambda d: out.fields([("card", d["card_id"]), ("file", d["file"]),
                                           ("variant check value", d["variant_check_value"]),
                                           ("key-block check value", d["keyblock_check_value"])]))


def unignored_git_work_tree(path: Path) -> Path | None:
    """The git work tree holding `path`, unless git ignores the file there (None when none holds it)."""
    path = path.absolute()
    root = next((d for d in path.parents if (d / ".git").exists()), None)
    if root is None:
        return None
    try:
        ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", str(path)], capture_output=True,
                                 timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ignored = False  # no git to ask: warn anyway
    return None if ignored else root


# ---- helpers for the appliance commands --------------------------------------------------------------
def mgmt(cx: Ctx, resource_group: str, name: str) -> Management:
    return connect(cx.client, resource_group, name)


def parse_card(value: str) -> tuple[Path, str]:
    """`FILE:PIN` (the first `:` after which an existing file ends), or `FILE` alone (the PIN is asked for)."""
    for i, ch in enumerate(value):
        if ch == ":" and i and Path(value[:i]).expanduser().is_file():
            return Path(value[:i]).expanduser(), value[i + 1:]
    path = Path(value).expanduser()
    if path.is_file():
        return path, _prompt_pin(f"PIN of card {path}", confirmation=False)
    shown = value.split(":", 1)[0] if ":" in value else value
    raise CliError("CardNotFound", f"No card file '{shown}': give --card FILE:PIN with a file made by "
                                   "'hsmcloud payshield card new'.")


def hint(cx: Ctx, text: str) -> None:
    if not cx.json:
        cx.out.note(text, style="dim")


def lmk_fields(out: Output, lmk: dict) -> None:
    out.fields([("LMK", f"{lmk.get('id')} (slot {lmk.get('slot')})"), ("scheme", lmk.get("scheme")),
                ("algorithm", lmk.get("algorithm")), ("check value", Text(str(lmk.get("check_value")), style="bold")),
                ("cards", lmk.get("cards")), ("authorised", "yes" if lmk.get("authorised") else "no")])


# ---- the management credential ---------------------------------------------------------------------
def credential_result(cx: Ctx, store: CredentialStore, cred: SavedCredential, *, reveal: bool = False,
                      note: str | None = None) -> None:
    data = {"name": cred.name, "resourceGroup": cred.resource_group, "serial": cred.serial,
            "issuedAt": cred.issued_at, "fingerprint": cred.fingerprint, "file": str(store.path_of(cred))}
    if reveal:
        data["token"] = cred.token

    def human(d: dict) -> None:
        pairs = [("payment HSM", d["name"]), ("device", d["serial"]), ("issued", d["issuedAt"]),
                 ("fingerprint", d["fingerprint"]), ("saved in", d["file"])]
        if reveal:
            pairs.append(("token", Text(d["token"], style="bold")))
        cx.out.fields(pairs)
        if note:
            cx.out.note(note, style="dim")
    cx.out.result(data, human)


@service_command(credential_app, "claim")
def credential_claim(cx: Ctx, name: Name, resource_group: Group):
    """Claim the management credential and save it here (the first payshield command does this by itself)."""
    client = cx.client
    ep = endpoints(client, resource_group, name)
    store = CredentialStore()
    cred = saved_credential(client, resource_group, name, ep, store=store)
    with management_for(ep, cred, store=store) as m:
        try:
            m.json("GET", "/health")
        except CliError as exc:
            if exc.status != 401:
                raise
            cred = claim(client, resource_group, name, ep, store)  # released meanwhile: the device takes a new one
    credential_result(cx, store, cred, note="Keep this file private (mode 0600): it opens the device's security "
                                            "domain. Rotate it with 'hsmcloud payshield credential rotate'.")


@service_command(credential_app, "show")
def credential_show(cx: Ctx, name: Name, resource_group: Group,
                    reveal: Annotated[bool, typer.Option("--reveal", help="Print the token too (for your own "
                                                                        "tools: Authorization: Bearer <token>).")]
                    = False):
    """Where the saved management credential is, when it was issued and its fingerprint (the token with --reveal)."""
    client = cx.client
    ep = endpoints(client, resource_group, name)
    store = CredentialStore()
    cred = saved_credential(client, resource_group, name, ep, claim_if_unclaimed=False, store=store)
    credential_result(cx, store, cred, reveal=reveal)


@service_command(credential_app, "rotate")
def credential_rotate(cx: Ctx, name: Name, resource_group: Group):
    """Replace the management credential with a new one; the old one stops working at once."""
    client = cx.client
    ep = endpoints(client, resource_group, name)
    store = CredentialStore()
    cred = rotate(ep, saved_credential(client, resource_group, name, ep, claim_if_unclaimed=False, store=store),
                  store)
    credential_result(cx, store, cred, note="Rotated between this machine and the device: the service never saw "
                                            "the old or the new token.")


# ---- LMKs --------------------------------------------------------------------------------------------
@service_command(lmk_app, "load")
def lmk_load(cx: Ctx, name: Name, resource_group: Group,
             card: Annotated[list[str], typer.Option("--card", show_default=False,
                                                     help="An admin card as FILE:PIN (FILE alone: the PIN is asked "
                                                          "for). At least 2 different cards.")],
             key_block: Annotated[bool, typer.Option("--key-block", help="Form an AES key-block LMK instead of a "
                                                                         "variant LMK.")] = False,
             three_key: Annotated[bool, typer.Option("--three-key", help="Form a triple-length (3-key 3DES) "
                                                                         "variant LMK.")] = False,
             slot: Slot = 0,
             replace: Annotated[bool, typer.Option("--replace", help="Replace the LMK already in that slot.")]
             = False):
    """Form an LMK from admin cards (XOR of their components) and print its check value."""
    from hsmcloud.appliances.payshield import cards
    from hsmcloud.appliances.payshield.errors import CardError

    if len(card or []) < 2:
        raise CliError("InvalidArgument", "An LMK is formed from at least 2 admin cards: give --card FILE:PIN at "
                                          "least twice.")
    entries = []
    for value in card:
        path, pin = parse_card(value)
        try:
            doc = cards.read_card_file(path)
        except CardError as exc:
            raise _card_error(exc) from None
        entries.append({"card": doc, "pin": pin})
    if key_block and three_key:
        raise CliError("InvalidArgument", "--key-block and --three-key exclude each other.")
    scheme = "keyblock" if key_block else "variant3" if three_key else "variant"
    body = {"slot": slot, "scheme": scheme, "cards": entries, "replace": replace}
    with mgmt(cx, resource_group, name) as m:
        lmk = m.json("POST", "/lmk", body=body)
    cx.out.result(lmk, lambda d: lmk_fields(cx.out, d))
    hint(cx, f"Next: hsmcloud payshield key load -g {resource_group} -n {name} --type 000 --component HEX "
             "--component HEX")


@service_command(lmk_app, "list")
def lmk_list(cx: Ctx, name: Name, resource_group: Group):
    """List the loaded LMKs: slot, scheme, check value, authorised state."""
    with mgmt(cx, resource_group, name) as m:
        lmks = (m.json("GET", "/lmk") or {}).get("lmks") or []
    rows = [[f"{x.get('id')}", x.get("scheme"), x.get("algorithm"), x.get("check_value"), x.get("cards"),
             "yes" if x.get("authorised") else "no", x.get("loaded_at")] for x in lmks]
    cx.out.result(lmks, lambda _d: cx.out.table(["LMK", "Scheme", "Algorithm", "Check value", "Cards", "Authorised",
                                                 "Loaded at"], rows, empty="No LMK is loaded."))


# ---- authorised state --------------------------------------------------------------------------------
def _authorize(cx: Ctx, resource_group: str, name: str, slot: int, on: bool) -> None:
    with mgmt(cx, resource_group, name) as m:
        data = m.json("POST", "/authorize" if on else "/deauthorize", body={"slot": slot})
    state = "authorised" if data.get("authorised") else "not authorised"
    cx.out.result(data, lambda d: cx.out.print(f"LMK {d.get('slot', slot):02d} of {name}: {state}."))


@service_command(app, "authorize")
def authorize(cx: Ctx, name: Name, resource_group: Group, slot: Slot = 0):
    """Enter the authorised state for an LMK (sensitive commands such as component export need it)."""
    _authorize(cx, resource_group, name, slot, True)


@service_command(app, "deauthorize")
def deauthorize(cx: Ctx, name: Name, resource_group: Group, slot: Slot = 0):
    """Leave the authorised state for an LMK."""
    _authorize(cx, resource_group, name, slot, False)


# ---- keys --------------------------------------------------------------------------------------------
KeyType = Annotated[str, typer.Option("--type", "-t", show_default=False,
                                      help="Key type code, e.g. 000 (ZMK), 001 (ZPK), 002 (TPK/PVK), 402 (CVK).")]


@service_command(key_app, "load")
def key_load(cx: Ctx, name: Name, resource_group: Group, key_type: KeyType,
             component: Annotated[list[str], typer.Option("--component", "-c", show_default=False,
                                                          help="A clear key component in hex (2 to 9 of them; TDES "
                                                               "components with odd parity).")],
             slot: Slot = 0,
             scheme: Annotated[Optional[str], typer.Option("--scheme", show_default=False,
                                                           help="Variant LMK: Z, U or T (default by length).")] = None,
             algorithm: Annotated[Optional[str], typer.Option("--algorithm", show_default=False,
                                                              help="Key-block LMK: T (TDES, default) or A (AES).")]
             = None,
             usage: Annotated[Optional[str], typer.Option("--usage", show_default=False,
                                                          help="Key-block LMK: key usage (default from the type).")]
             = None,
             mode_of_use: Annotated[Optional[str], typer.Option("--mode-of-use", show_default=False,
                                                                help="Key-block LMK: mode of use (default N).")]
             = None,
             exportability: Annotated[Optional[str], typer.Option("--exportability", show_default=False,
                                                                  help="Key-block LMK: E, S or N (default E).")]
             = None):
    """Form a key from clear components (key-loading device): prints the key under the LMK and its KCV."""
    components = ["".join(c.split()) for c in component or []]
    if not 2 <= len(components) <= 9:
        raise CliError("InvalidArgument", "Give 2 to 9 clear components: --component HEX --component HEX ...")
    body: dict[str, Any] = {"type": key_type.upper(), "components": components, "slot": slot}
    for field, value in (("scheme", scheme), ("algorithm", algorithm), ("usage", usage),
                         ("mode_of_use", mode_of_use), ("exportability", exportability)):
        if value is not None:
            body[field] = value.upper()
    with mgmt(cx, resource_group, name) as m:
        data = m.json("POST", "/keys/load", body=body)

    def human(d: dict) -> None:
        cx.out.fields([("key under LMK", Text(str(d.get("key")), style="bold")), ("KCV", d.get("kcv")),
                       ("type", d.get("type")), ("LMK", f"{d.get('slot', slot):02d}"),
                       ("component KCVs", ", ".join(d.get("component_kcvs") or []))])
    cx.out.result(data, human)


@service_command(key_app, "export-components")
def key_export(cx: Ctx, name: Name, resource_group: Group, key_type: KeyType,
               key: Annotated[str, typer.Option("--key", "-k", show_default=False,
                                                help="The key under the LMK (as 'key load' or A0 printed it).")],
               components: Annotated[int, typer.Option("--components", min=2, max=9,
                                                       help="How many clear components to split it into.")] = 2,
               slot: Slot = 0):
    """Split a key under the LMK into clear components (trusted management device; needs the authorised state)."""
    body = {"type": key_type.upper(), "key": key.strip(), "components": components, "slot": slot}
    with mgmt(cx, resource_group, name) as m:
        try:
            data = m.json("POST", "/keys/export-components", body=body)
        except CliError as exc:
            if exc.code == "NotAuthorized":
                stop = "" if exc.message.endswith((".", "!", "?")) else "."
                exc.message += (f"{stop} Run 'hsmcloud payshield authorize -g {resource_group} -n {name} "
                                f"--slot {slot}' first.")
            raise

    def human(d: dict) -> None:
        kcvs = d.get("component_kcvs") or []
        pairs: list[tuple[str, Any]] = []
        for i, part in enumerate(d.get("components") or []):
            pairs.append((f"component {i + 1}", f"{part}  (KCV {kcvs[i] if i < len(kcvs) else '?'})"))
        pairs += [("key KCV", d.get("kcv")), ("algorithm", d.get("algorithm"))]
        cx.out.fields(pairs)
    cx.out.result(data, human)


# ---- settings, status, logs, release -----------------------------------------------------------------
@service_command(app, "settings")
def settings(cx: Ctx, name: Name, resource_group: Group,
             header_length: Annotated[Optional[int], typer.Option("--header-length", min=0, max=255,
                                                                  show_default=False,
                                                                  help="Host message header length (0-255).")] = None,
             disable: Annotated[Optional[list[str]], typer.Option("--disable-command", show_default=False,
                                                                  help="Disable a host command, e.g. CW "
                                                                       "(repeatable).")] = None,
             enable: Annotated[Optional[list[str]], typer.Option("--enable-command", show_default=False,
                                                                 help="Enable a disabled host command again "
                                                                      "(repeatable).")] = None,
             host_tls: Annotated[Optional[bool], typer.Option("--host-tls/--no-host-tls", show_default=False,
                                                              help="TLS on HOST1/HOST2.")] = None):
    """Show the host settings, or change them (header length, disabled commands, TLS)."""
    with mgmt(cx, resource_group, name) as m:
        current = m.json("GET", "/settings")
        changes: dict[str, Any] = {}
        if header_length is not None:
            changes["header_length"] = header_length
        if disable or enable:
            disabled = set(current.get("disabled_commands") or [])
            disabled |= {c.strip().upper() for c in disable or []}
            disabled -= {c.strip().upper() for c in enable or []}
            changes["disabled_commands"] = sorted(disabled)
        if host_tls is not None:
            changes["host_tls"] = host_tls
        data = m.json("PUT", "/settings", body=changes) if changes else current

    def human(d: dict) -> None:
        cx.out.fields([("header length", d.get("header_length")),
                       ("disabled commands", ", ".join(d.get("disabled_commands") or []) or "none"),
                       ("host TLS", "on" if d.get("host_tls") else "off")])
        if d.get("host_tls_certificate"):
            cx.out.print(str(d["host_tls_certificate"]).rstrip())
    cx.out.result(data, human)


@service_command(app, "status")
def status(cx: Ctx, name: Name, resource_group: Group):
    """The appliance's identity, firmware, licence, links and whether it holds customer content."""
    with mgmt(cx, resource_group, name) as m:
        data = m.json("GET", "/health")

    def human(d: dict) -> None:
        lic = d.get("licence") or {}
        links = d.get("links") or {}
        cx.out.fields([("serial", d.get("serial")), ("model", d.get("model")), ("firmware", d.get("firmware")),
                       ("LMK slots", lic.get("lmk_slots")), ("calls per second", lic.get("cps")),
                       ("links", ", ".join(f"{k} {v}" for k, v in links.items())),
                       ("LMKs loaded", d.get("lmks_loaded")), ("host connections", d.get("host_connections")),
                       ("released", "yes" if d.get("released") else "no")])
    cx.out.result(data, human)


@service_command(app, "logs")
def logs(cx: Ctx, name: Name, resource_group: Group,
         audit: Annotated[bool, typer.Option("--audit", help="The audit log (every management action).")] = False,
         error: Annotated[bool, typer.Option("--error", help="The error log (failed host commands, framing "
                                                             "errors).")] = False,
         out_file: Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False,
                                                          help="Write the JSONL export to this file instead of "
                                                               "stdout.")] = None):
    """Export the audit or error log as JSON Lines (stdout, or --out FILE)."""
    if audit == error:
        raise CliError("InvalidArgument", "Give exactly one of --audit or --error.")
    which = "audit" if audit else "error"
    with mgmt(cx, resource_group, name) as m:
        if cx.json and out_file is None:
            entries = (m.json("GET", f"/logs/{which}", params={"format": "json"}) or {}).get("entries") or []
            cx.out.emit_json(entries)
            return
        text = m.text("GET", f"/logs/{which}", params={"format": "jsonl"})
    if out_file is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = out_file.expanduser()
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError("CannotWriteFile", f"Cannot write {path}: {exc.strerror or exc}.") from None
    count = sum(1 for line in text.splitlines() if line.strip())
    cx.out.result({"file": str(path), "log": which, "entries": count},
                  lambda d: cx.out.print(f"{d['entries']} {which} log entries written to {d['file']}."))


@service_command(app, "release")
def release(cx: Ctx, name: Name, resource_group: Group,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False):
    """Erase all customer content (LMKs, settings, logs, credential): required before 'hsmcloud hsm delete'."""
    with mgmt(cx, resource_group, name) as m:
        if not yes:
            confirm(f"Release payment HSM '{name}' in resource group '{resource_group}'? This erases its LMKs, "
                    "settings and logs for good.")
        data = m.json("POST", "/release")

    def human(d: dict) -> None:
        cx.out.print(f"Payment HSM '{name}' released: all customer content erased"
                     + ("." if d.get("pristine") else f"; remaining: {', '.join(d.get('findings') or [])}."))
    cx.out.result(data, human)
    hint(cx, f"Next: hsmcloud hsm delete -g {resource_group} -n {name}")


# ---- TLS on the host ports ---------------------------------------------------------------------------
host_tls_app = typer.Typer(help="TLS on HOST1/HOST2: off, on (server certificate) or mutual (trusted client "
                                "certificates only) per port.", no_args_is_help=True)
app.add_typer(host_tls_app, name="host-tls")
TLS_MODES = ("off", "on", "mutual")
TlsMode = Annotated[Optional[str], typer.Option(show_default=False, metavar="off|on|mutual",
                                                help="TLS mode of the port.")]


def host_tls_fields(cx: Ctx, d: dict) -> None:
    ports = d.get("ports") or {}
    server = d.get("server_certificate") or {}
    cx.out.fields([("HOST1", ports.get("host1")), ("HOST2", ports.get("host2")),
                   ("server certificate", server.get("fingerprint") or "none yet (made when TLS is first used)")])
    rows = [[t.get("subject"), "CA" if t.get("ca") else "client", t.get("not_after"), t.get("fingerprint")]
            for t in d.get("trusted") or []]
    cx.out.table(["Trusted subject", "Kind", "Not after", "SHA-256 fingerprint"], rows,
                 empty="No client certificate is trusted.")


@service_command(host_tls_app, "show")
def host_tls_show(cx: Ctx, name: Name, resource_group: Group):
    """The TLS mode of each host port, the trusted client certificates and the server certificate."""
    with mgmt(cx, resource_group, name) as m:
        data = m.json("GET", "/host-tls")
    cx.out.result(data, lambda d: host_tls_fields(cx, d))


@service_command(host_tls_app, "set")
def host_tls_set(cx: Ctx, name: Name, resource_group: Group, host1: TlsMode = None, host2: TlsMode = None):
    """Set the TLS mode of HOST1 and/or HOST2; open connections of a changed port are closed."""
    body = {port: mode.strip().lower() for port, mode in (("host1", host1), ("host2", host2)) if mode is not None}
    if not body:
        raise CliError("InvalidArgument", "Give --host1 MODE and/or --host2 MODE (off, on or mutual).")
    for port, mode in body.items():
        if mode not in TLS_MODES:
            raise CliError("InvalidArgument", f"--{port} must be off, on or mutual, not '{mode}'.")
    with mgmt(cx, resource_group, name) as m:
        try:
            data = m.json("PUT", "/host-tls", body=body)
        except CliError as exc:
            if exc.code == "NoTrustedClientCertificate":
                exc.message += (f" Run 'hsmcloud payshield host-tls trust -g {resource_group} -n {name} --cert "
                                "CA.pem' first.")
            raise
    cx.out.result(data, lambda d: host_tls_fields(cx, d))
    if "on" in body.values() or "mutual" in body.values():
        hint(cx, f"Pin the server certificate: hsmcloud payshield host-tls server-cert -g {resource_group} -n {name} "
                 "--out payshield-host.pem")


@service_command(host_tls_app, "trust")
def host_tls_trust(cx: Ctx, name: Name, resource_group: Group,
                   cert: Annotated[list[Path], typer.Option("--cert", show_default=False,
                                                            help="A PEM file of CA or client certificates to trust "
                                                                 "(repeatable). Never a private key.")]):
    """Trust client certificates for mutual TLS: a CA (every client certificate it issued) or one client."""
    texts = []
    for path in cert or []:
        path = path.expanduser()
        try:
            texts.append(path.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError("CannotReadFile", f"Cannot read {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    if not texts:
        raise CliError("InvalidArgument", "Give at least one --cert FILE (PEM).")
    with mgmt(cx, resource_group, name) as m:  # one request: all files are trusted, or none
        data = m.json("POST", "/host-tls/trusted", body={"certificate": "\n".join(t.strip() for t in texts) + "\n"})
    cx.out.result(data, lambda d: host_tls_fields(cx, d))


@service_command(host_tls_app, "untrust")
def host_tls_untrust(cx: Ctx, name: Name, resource_group: Group,
                     fingerprint: Annotated[str, typer.Option("--fingerprint", show_default=False,
                                                              help="SHA-256 fingerprint of the certificate, as "
                                                                   "'host-tls show' lists it.")]):
    """Stop trusting a client certificate; connections of mutual ports are closed."""
    from urllib.parse import quote

    with mgmt(cx, resource_group, name) as m:
        data = m.json("DELETE", "/host-tls/trusted/" + quote(fingerprint.strip(), safe=""))
    cx.out.result(data, lambda d: host_tls_fields(cx, d))


@service_command(host_tls_app, "server-cert")
def host_tls_server_cert(cx: Ctx, name: Name, resource_group: Group,
                         out_file: Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False,
                                                                          help="Write the PEM to this file instead "
                                                                               "of stdout.")] = None):
    """The certificate the host ports present (PEM), for the host application to pin."""
    with mgmt(cx, resource_group, name) as m:
        text = m.text("GET", "/host-tls/server-certificate")
    if out_file is None:
        if cx.json:
            cx.out.emit_json({"pem": text})
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        return
    path = out_file.expanduser()
    try:
        path.write_text(text, encoding="ascii")
    except OSError as exc:
        raise CliError("CannotWriteFile", f"Cannot write {path}: {exc.strerror or exc}.") from None
    cx.out.result({"file": str(path)}, lambda d: cx.out.print(f"Server certificate written to {d['file']}."))
