"""`hsmcloud hsm ...`: dedicated HSMs, mirroring `az dedicated-hsm`."""
from __future__ import annotations

import re
import time
from typing import Annotated, Optional

import typer
from rich.text import Text

from hsmcloud.cli.client import GROUPS_API, HSM_API, CliError, Poll, iter_kv, pause, poll_interval
from hsmcloud.cli.common import Ctx, confirm, service_command
from hsmcloud.cli.output import Output, parse_resource_id, styled_state

app = typer.Typer(help="Dedicated HSMs: create, list, show, update, delete, wait, endpoints (like az dedicated-hsm).",
                  no_args_is_help=True)

LUNA_SKU = "SafeNet Luna Network HSM A790"
CREATE_TERMINAL = ("Succeeded", "Failed", "Canceled")
DEFAULT_TIMEOUT = 1800.0

Name = Annotated[str, typer.Option("--name", "-n", help="Name of the dedicated HSM.", show_default=False)]
Group = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.", show_default=False)]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return at once; do not wait for the operation to finish.")]
Interval = Annotated[Optional[float], typer.Option(
    "--interval", help="Seconds between polls (default: env HSMCLOUD_POLL_INTERVAL, else Retry-After or 1).",
    show_default=False)]
Timeout = Annotated[float, typer.Option("--timeout", help="Give up waiting after this many seconds.")]


# ---- parsing az-style arguments ------------------------------------------------------------------
def parse_ref(value: str | None, option: str) -> str | None:
    """A subnet reference given as `<id>`, `id=<id>` or `resourceId=<id>`."""
    if value is None:
        return None
    value = value.strip()
    m = re.match(r"^(id|resourceId|resource-id)=(.*)$", value, re.IGNORECASE)
    if m:
        value = m.group(2).strip().strip("'\"")
    if not value.startswith("/subscriptions/"):
        raise CliError("InvalidArgument", f"{option} takes a subnet resource id (/subscriptions/.../virtualNetworks/"
                                          f"<vnet>/subnets/<subnet>, as 'hsmcloud network create' prints it), not "
                                          f"'{value}'.")
    return value


def parse_interfaces(values: list[str] | None, option: str) -> list[dict]:
    """`private-ip-address=10.2.1.5` (repeatable), a bare IP, or az's `private-ip-address='("a", "b")'`."""
    nics: list[dict] = []
    for raw in values or []:
        raw = raw.strip()
        key, sep, value = raw.partition("=")
        if sep:
            if key.strip().lower().replace("_", "-") not in ("private-ip-address", "privateipaddress"):
                raise CliError("InvalidArgument", f"{option} takes private-ip-address=<ip>, not '{raw}'.")
        else:
            value = raw
        ips = [ip for ip in re.split(r"[\s,()\"']+", value) if ip]
        if not ips:
            raise CliError("InvalidArgument", f"{option} needs an IP address: private-ip-address=10.2.1.5.")
        for ip in ips:
            if not re.match(r"^\d{1,3}(\.\d{1,3}){3}$", ip):
                raise CliError("InvalidArgument", f"'{ip}' given to {option} is not an IPv4 address.")
            nics.append({"privateIpAddress": ip})
    return nics


def parse_tags(values: list[str] | None) -> dict:
    return dict(iter_kv(values, option="--tags"))


def parse_zones(values: list[str] | None) -> list[str]:
    return [z for raw in values or [] for z in re.split(r"[\s,]+", raw) if z]


# ---- rendering ---------------------------------------------------------------------------------------
def state_of(hsm: dict) -> str | None:
    return (hsm.get("properties") or {}).get("provisioningState")


def private_ips(hsm: dict, profile: str = "networkProfile") -> list[str]:
    prof = (hsm.get("properties") or {}).get(profile) or {}
    return [n.get("privateIpAddress") for n in prof.get("networkInterfaces") or [] if n.get("privateIpAddress")]


def hsm_row(h: dict) -> list:
    props = h.get("properties") or {}
    return [h.get("name"), parse_resource_id(h.get("id")).get("resourcegroups"), h.get("location"),
            (h.get("sku") or {}).get("name"), styled_state(props.get("provisioningState")),
            ", ".join(private_ips(h)), props.get("stampId")]


HSM_COLUMNS = ["Name", "Resource group", "Location", "SKU", "State", "Private IP", "Stamp"]


def show_hsm(out: Output, h: dict) -> None:
    props = h.get("properties") or {}
    subnet = ((props.get("networkProfile") or {}).get("subnet") or {})
    pairs = [("name", h.get("name")), ("id", h.get("id")), ("location", h.get("location")),
             ("sku", (h.get("sku") or {}).get("name")), ("state", styled_state(props.get("provisioningState"))),
             ("status", props.get("statusMessage")), ("stamp", props.get("stampId")),
             ("subnet", subnet.get("resourceId") or subnet.get("id")), ("private IP", ", ".join(private_ips(h)))]
    if props.get("managementNetworkProfile"):
        pairs.append(("mgmt private IP", ", ".join(private_ips(h, "managementNetworkProfile"))))
    if h.get("zones"):
        pairs.append(("zones", ", ".join(h["zones"])))
    pairs.append(("tags", ", ".join(f"{k}={v}" for k, v in (h.get("tags") or {}).items()) or None))
    out.fields(pairs)


def failed_error(h: dict) -> CliError:
    props = h.get("properties") or {}
    err = props.get("error") if isinstance(props.get("error"), dict) else {}
    code = err.get("code") or "ProvisioningFailed"
    message = props.get("statusMessage") or err.get("message") or f"Dedicated HSM '{h.get('name')}' failed."
    return CliError(code, message, body=h)


# ---- waiting -----------------------------------------------------------------------------------------
def wait_for_state(cx: Ctx, path: str, name: str, *, interval: float | None, timeout: float,
                   initial: dict | None = None) -> dict:
    """Poll GET on an HSM until provisioningState is terminal, with a live status line."""
    client = cx.client
    every = poll_interval(interval)
    with cx.out.progress(f"dedicated HSM {name}") as progress:
        def on_state(state, body):
            props = body.get("properties") or {}
            progress.update(state, None if state == "Failed" else props.get("statusMessage"))

        poll = Poll(fetch=lambda: client.get(path, params={"api-version": HSM_API}), state_of=state_of,
                    done=lambda s: s in CREATE_TERMINAL, interval=every, timeout=timeout)
        if initial is not None:
            poll.states.append(state_of(initial))
            on_state(state_of(initial), initial)
            time.sleep(pause(every))
        return poll.run(on_state)


def wait_delete(cx: Ctx, location: str, name: str, *, interval: float | None, timeout: float) -> None:
    with cx.out.progress(f"deleting {name}") as progress:
        progress.update("Deleting")
        cx.client.wait_operation(location, interval=poll_interval(interval), timeout=timeout,
                                 on_tick=lambda _t: progress.tick())
        progress.update("Deleted")


def hint(cx: Ctx, text: str) -> None:
    if not cx.json:
        cx.out.note(text, style="dim")


# ---- commands ----------------------------------------------------------------------------------------
@service_command(app, "create")
def create(cx: Ctx, name: Name, resource_group: Group,
           subnet: Annotated[str, typer.Option("--subnet", help="Subnet resource id, or id=<subnet id> (must be "
                                                                "delegated to Microsoft.HardwareSecurityModules/"
                                                                "dedicatedHSMs).", show_default=False)],
           location: Annotated[Optional[str], typer.Option("--location", "-l", show_default=False,
                                                           help="Region (default: the resource group's).")] = None,
           sku: Annotated[str, typer.Option("--sku", help="SKU name.")] = LUNA_SKU,
           stamp_id: Annotated[Optional[str], typer.Option("--stamp-id", show_default=False,
                                                           help="Stamp, e.g. stamp1 (default: the service picks).")]
           = None,
           network_interfaces: Annotated[Optional[list[str]], typer.Option(
               "--network-interfaces", "-i", show_default=False,
               help="private-ip-address=<ip> for the host NIC (repeatable).")] = None,
           mgmt_network_subnet: Annotated[Optional[str], typer.Option(
               "--mgmt-network-subnet", show_default=False,
               help="Management subnet id (payment HSMs), or id=<subnet id>.")] = None,
           mgmt_network_interfaces: Annotated[Optional[list[str]], typer.Option(
               "--mgmt-network-interfaces", "-m", show_default=False,
               help="private-ip-address=<ip> for the management NIC (repeatable).")] = None,
           zones: Annotated[Optional[list[str]], typer.Option("--zones", show_default=False,
                                                              help="Availability zone (repeatable).")] = None,
           tags: Annotated[Optional[list[str]], typer.Option("--tags", show_default=False,
                                                             help="key=value (repeatable).")] = None,
           no_wait: NoWait = False, interval: Interval = None, timeout: Timeout = DEFAULT_TIMEOUT):
    """Create a dedicated HSM and wait until it is Succeeded (or Failed)."""
    subnet_id = parse_ref(subnet, "--subnet")
    nics = parse_interfaces(network_interfaces, "--network-interfaces")
    mgmt_subnet_id = parse_ref(mgmt_network_subnet, "--mgmt-network-subnet")
    mgmt_nics = parse_interfaces(mgmt_network_interfaces, "--mgmt-network-interfaces")
    tag_map = parse_tags(tags)
    zone_list = parse_zones(zones)
    client = cx.client
    if not location:
        group = client.get(client.group_path(resource_group), params={"api-version": GROUPS_API})
        location = group.get("location")
    props: dict = {"networkProfile": {"subnet": {"resourceId": subnet_id}, "networkInterfaces": nics}}
    if mgmt_subnet_id or mgmt_nics:
        props["managementNetworkProfile"] = {"subnet": {"resourceId": mgmt_subnet_id or subnet_id},
                                             "networkInterfaces": mgmt_nics}
    if stamp_id:
        props["stampId"] = stamp_id
    body: dict = {"location": location, "sku": {"name": sku}, "tags": tag_map, "properties": props}
    if zone_list:
        body["zones"] = zone_list
    path = client.hsm_path(resource_group, name)
    hsm = client.put(path, body, params={"api-version": HSM_API})
    if no_wait or state_of(hsm) in CREATE_TERMINAL:
        if state_of(hsm) == "Failed":
            raise failed_error(hsm)
        cx.out.result(hsm, lambda h: show_hsm(cx.out, h))
        if no_wait and state_of(hsm) not in CREATE_TERMINAL:
            hint(cx, f"Not waiting. Follow it with: hsmcloud hsm wait -n {name} -g {resource_group} --created")
        return
    hsm = wait_for_state(cx, path, name, interval=interval, timeout=timeout, initial=hsm)
    if state_of(hsm) != "Succeeded":
        raise failed_error(hsm)
    cx.out.result(hsm, lambda h: show_hsm(cx.out, h))
    if str((hsm.get("sku") or {}).get("name", "")).startswith("payShield"):
        hint(cx, f"Next: hsmcloud payshield lmk load -g {resource_group} -n {name} --card FILE:PIN --card FILE:PIN "
                 "(cards from 'hsmcloud payshield card new')")
    else:
        hint(cx, f"Next: hsmcloud hsm endpoints -n {name} -g {resource_group}   (SSH to the appliance as admin)")


@service_command(app, "list")
def list_(cx: Ctx,
          resource_group: Annotated[Optional[str], typer.Option("--resource-group", "-g", show_default=False,
                                                                help="Only this resource group.")] = None,
          top: Annotated[Optional[int], typer.Option("--top", min=1, show_default=False,
                                                     help="At most this many HSMs.")] = None):
    """List dedicated HSMs of the subscription (or of one resource group)."""
    client = cx.client
    params = {"api-version": HSM_API}
    if top:
        params["$top"] = str(top)
    items = client.pages(client.hsm_path(resource_group), params=params, limit=top)
    cx.out.result(items, lambda xs: cx.out.table(HSM_COLUMNS, [hsm_row(h) for h in xs],
                                                 empty="No dedicated HSMs."))


@service_command(app, "show")
def show(cx: Ctx, name: Name, resource_group: Group):
    """Show one dedicated HSM."""
    client = cx.client
    hsm = client.get(client.hsm_path(resource_group, name), params={"api-version": HSM_API})
    cx.out.result(hsm, lambda h: show_hsm(cx.out, h))


@service_command(app, "update")
def update(cx: Ctx, name: Name, resource_group: Group,
           tags: Annotated[Optional[list[str]], typer.Option("--tags", show_default=False,
                                                             help="key=value (repeatable); replaces all tags. Give "
                                                                  "--tags '' to clear them.")] = None,
           sku: Annotated[Optional[str], typer.Option("--sku", show_default=False,
                                                      help="A payment HSM's new performance level, e.g. "
                                                           "payShield10K_LMK1_CPS250 (same LMK count).")] = None,
           no_wait: NoWait = False, interval: Interval = None, timeout: Timeout = DEFAULT_TIMEOUT):
    """Update the tags of a dedicated HSM, or a payment HSM's performance level (--sku)."""
    if tags is None and sku is None:
        raise CliError("InvalidArgument", "Nothing to update: give --tags key=value (repeatable) and/or --sku.")
    body: dict = {}
    if tags is not None:
        body["tags"] = parse_tags([t for t in tags if t.strip()])
    if sku is not None:
        body["sku"] = {"name": sku}
    client = cx.client
    path = client.hsm_path(resource_group, name)
    resp = client.send("PATCH", path, params={"api-version": HSM_API}, body=body)
    if resp.status_code == 202 and resp.headers.get("Location"):
        if no_wait:
            cx.out.result({"status": "Accepted", "location": resp.headers["Location"]},
                          lambda _d: cx.out.print(f"Update of {name} accepted."))
            return
        final = client.wait_operation(resp.headers["Location"], interval=poll_interval(interval), timeout=timeout)
        hsm = final.json() if final.content else client.get(path, params={"api-version": HSM_API})
    else:
        hsm = resp.json()
    cx.out.result(hsm, lambda h: show_hsm(cx.out, h))


@service_command(app, "delete")
def delete(cx: Ctx, name: Name, resource_group: Group,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
           no_wait: NoWait = False, interval: Interval = None, timeout: Timeout = DEFAULT_TIMEOUT):
    """Delete a dedicated HSM (its device must be zeroized first)."""
    if not yes:
        confirm(f"Delete dedicated HSM '{name}' in resource group '{resource_group}'?")
    client = cx.client
    resp = client.send("DELETE", client.hsm_path(resource_group, name), params={"api-version": HSM_API})
    if resp.status_code == 204:
        cx.out.result({"name": name, "status": "NotFound"},
                      lambda _d: cx.out.print(f"Dedicated HSM '{name}' does not exist (nothing to delete)."))
        return
    location = resp.headers.get("Location")
    if resp.status_code == 202 and location and not no_wait:
        wait_delete(cx, location, name, interval=interval, timeout=timeout)
        cx.out.result({"name": name, "status": "Deleted"},
                      lambda _d: cx.out.print(f"Dedicated HSM '{name}' deleted."))
        return
    cx.out.result({"name": name, "status": "Accepted", "location": location},
                  lambda _d: cx.out.print(f"Deletion of '{name}' accepted."))
    hint(cx, f"Follow it with: hsmcloud hsm wait -n {name} -g {resource_group} --deleted")


@service_command(app, "wait")
def wait(cx: Ctx, name: Name, resource_group: Group,
         created: Annotated[bool, typer.Option("--created", help="Wait until provisioningState is Succeeded.")]
         = False,
         updated: Annotated[bool, typer.Option("--updated", help="Same as --created.")] = False,
         deleted: Annotated[bool, typer.Option("--deleted", help="Wait until it no longer exists.")] = False,
         exists: Annotated[bool, typer.Option("--exists", help="Wait until it exists.")] = False,
         interval: Interval = None, timeout: Annotated[float, typer.Option("--timeout", help="Seconds.")] = 3600.0):
    """Wait until a dedicated HSM reaches a condition."""
    chosen = [flag for flag, on in (("--created", created), ("--updated", updated), ("--deleted", deleted),
                                    ("--exists", exists)) if on]
    if len(chosen) != 1:
        raise CliError("InvalidArgument", "Give exactly one of --created, --updated, --deleted or --exists.")
    condition = chosen[0]
    every = poll_interval(interval)
    client = cx.client
    path = client.hsm_path(resource_group, name)

    def fetch() -> dict:
        try:
            return client.get(path, params={"api-version": HSM_API})
        except CliError as exc:
            if exc.status != 404:
                raise
            return {}

    done = {"--deleted": lambda s: s == "NotFound", "--exists": lambda s: s != "NotFound"}.get(
        condition, lambda s: s in CREATE_TERMINAL)
    with cx.out.progress(f"{name} {condition.lstrip('-')}") as progress:
        poll = Poll(fetch=fetch, state_of=lambda b: state_of(b) if b else "NotFound", done=done, interval=every,
                    timeout=timeout)
        hsm = poll.run(lambda s, _b: progress.update(s))
    state = state_of(hsm) if hsm else "NotFound"
    if condition in ("--created", "--updated") and state != "Succeeded":
        raise failed_error(hsm)
    cx.out.result(hsm or {"name": name, "status": "NotFound"}, lambda _d: cx.out.print(f"{name}: {state}"))


@service_command(app, "endpoints")
def endpoints(cx: Ctx, name: Name, resource_group: Group):
    """Where the HSM's appliance is reachable on this machine (its loopback address, SSH port, first-login password)."""
    client = cx.client
    data = client.get(client.hsm_path(resource_group, name) + "/endpoints", params={"api-version": HSM_API})

    def human(d: dict) -> None:
        address = d.get("address")
        ports = d.get("ports") or {}
        pairs = [("name", d.get("name")), ("device", f"{d.get('serial')} ({d.get('kind')})"),
                 ("private IP", ", ".join(d.get("privateIpAddresses") or [])), ("address", address)]
        for proto, port in ports.items():
            pairs.append((f"{proto} port", port))
        if d.get("kind") == "payshield":
            issued = d.get("managementCredentialIssuedAt")
            pairs.append(("management credential", f"issued {issued}" if issued else
                          "not claimed yet (the first 'hsmcloud payshield' command claims it)"))
        cx.out.fields(pairs)
        if ports.get("ssh"):
            cx.out.print(Text.assemble(("\nssh -p ", "bold"), (str(ports["ssh"]), "bold"),
                                       (f" admin@{address}", "bold")))
            if d.get("initialAdminPassword"):
                cx.out.print(Text.assemble("initial admin password: ", (d["initialAdminPassword"], "bold"),
                                           "  (first login only: you must change it then)"))
            if ports.get("ntls"):
                cx.out.note(f"Applications: hsmcloud client connect -g {resource_group} -n {name} --partition <name> "
                            f"(NTLS on {address}:{ports['ntls']})", style="dim")
        elif not ports:
            cx.out.print("(this appliance kind has no shell endpoint)")
    cx.out.result(data, human)
