"""LunaSH commands on HSM and partition policies and on what is inside a partition."""

from __future__ import annotations

import asyncio

from ..core.errors import FileRefused, InvalidUsage, PinChangeRequired
from ..core.files import BACKUP_SUFFIX, check_upload_name
from ..core.partitions import PartitionStatus
from ..core.policies import HSM_POLICIES, PARTITION_POLICIES, Destructive, Policy
from ..core.roles import PARTITION_ROLES, Role
from .command_line import Command, Flag
from .shell import Invocation

_FORCE = Flag(name="force", takes_value=False, help="do not ask to type 'proceed'")
_VERBOSE = Flag(name="verbose", takes_value=False, help="also show which changes are destructive")
_PARTITION = Flag(name="partition", metavar="name", required=True, help="partition name")
PSO_PIN_PROMPT = "Please enter the Partition SO password (PIN):\n> "
CO_PIN_PROMPT = "Please enter the Crypto Officer password of the partition:\n> "


def _number(inv: Invocation, key: str) -> int:
    raw = (inv.value(key) or "").strip()
    if not raw.isdigit():
        raise InvalidUsage(f"-{key} must be a number, not '{raw}'.")
    return int(raw)


def _destructive_note(policy: Policy) -> str:
    return {
        Destructive.NEVER: "",
        Destructive.ALWAYS: "  (destructive)",
        Destructive.WHEN_ENABLED: "  (destructive when turned on)",
    }[policy.destructive]


def _print_policies(inv: Invocation, table: dict[int, Policy], values: dict[int, int]) -> None:
    verbose = inv.flag("verbose")
    for code, policy in table.items():
        note = _destructive_note(policy) if verbose else ""
        inv.out(f"        {code}: {policy.name} : {values[code]}{note}")


# -- HSM policies -----------------------------------------------------------------------


async def hsm_showpolicies(inv: Invocation) -> None:
    inv.out("   HSM Policies")
    _print_policies(inv, HSM_POLICIES, inv.core.hsm.policies())


async def hsm_changepolicy(inv: Invocation) -> None:
    code, value = _number(inv, "policy"), _number(inv, "value")
    hsm = inv.state.require_initialized()
    inv.require_so(hsm)
    policy = HSM_POLICIES.get(code)
    if policy is not None:
        policy.check(value)
        if policy.destructive.applies(inv.core.hsm.policy(code), value):
            await inv.confirm(
                "Changing this policy will result in erasing all partitions on the HSM "
                f"({len(inv.state.partitions())} now), with all their objects."
            )
    change = await asyncio.to_thread(
        inv.core.hsm.change_policy, code, value, so_generation=hsm.generation
    )
    inv.out("'hsm changePolicy' successful.")
    inv.out()
    inv.out(f"Policy {change.policy.name} is now set to value: {change.new}")
    if change.destroyed:
        inv.out(f"{change.destroyed} partition(s) were erased.")


# -- partition policies and contents ----------------------------------------------------


async def partition_showpolicies(inv: Invocation) -> None:
    status = inv.core.partitions.by_name(inv.value("partition") or "")
    inv.out(f"   Partition policies for partition {status.name} ({status.serial}):")
    _print_policies(inv, PARTITION_POLICIES, status.policies)


async def partition_changepolicy(inv: Invocation) -> None:
    code, value = _number(inv, "policy"), _number(inv, "value")
    status = inv.core.partitions.by_name(inv.value("partition") or "")
    policy = PARTITION_POLICIES.get(code)
    if policy is not None:
        policy.check(value)
    pin = await inv.secret("psopin", PSO_PIN_PROMPT)
    grant = await asyncio.to_thread(
        inv.core.partitions.login, status.serial, Role.PARTITION_SO, pin
    )
    if policy is not None and policy.destructive.applies(status.policies[code], value):
        await inv.confirm(
            "Changing this policy will destroy all objects in partition "
            f"{status.name} ({inv.core.keystore.count(status.serial)} now)."
        )
    change = await asyncio.to_thread(
        inv.core.partitions.change_policy, status.serial, code, value, by=grant
    )
    inv.out("'partition changePolicy' successful.")
    inv.out()
    inv.out(f"Policy \"{change.policy.name}\" is now set to value: {change.new}")
    if change.destroyed:
        inv.out(f"{change.destroyed} object(s) were destroyed.")


def _role_line(status: PartitionStatus, role: Role) -> str:
    rs = status.roles[role]
    if not rs.initialized:
        return "not initialized"
    parts = [f"initialized, {rs.failed_logins} of {status.threshold(role)} failed logins"]
    if rs.must_change:
        parts.append("must change its PIN")
    if rs.locked:
        parts.append("LOCKED OUT")
    return ", ".join(parts)


async def partition_showinfo(inv: Invocation) -> None:
    status = inv.core.partitions.by_name(inv.value("partition") or "")
    hsm = inv.state.hsm()
    clients = [c.name for c in inv.core.clients.list() if status.serial in c.partitions]
    if not status.initialized:
        domain = "(none)"
    elif status.domain_digest == hsm.domain_digest:
        domain = "the HSM's cloning domain"
    else:
        domain = "its own cloning domain"
    rows = [
        ("Partition Name", status.name),
        ("Partition SN", status.serial),
        ("Label", status.label or "(none)"),
        ("Initialized", "Yes" if status.initialized else "No"),
        ("Cloning domain", domain),
        ("Objects", str(inv.core.keystore.count(status.serial)) if status.initialized else "0"),
    ]
    rows += [(role.title, _role_line(status, role)) for role in PARTITION_ROLES]
    rows.append(("Clients assigned", ", ".join(clients) or "(none)"))
    for name, value in rows:
        inv.out(f"   {name + ':':<24} {value}")


# -- backup and restore into the file area -----------------------------------------------


def _backup_name(inv: Invocation) -> str:
    name = inv.value("file") or ""
    if not name.endswith(BACKUP_SUFFIX):
        raise FileRefused(f"A backup file is named <name>{BACKUP_SUFFIX}, not '{name}'.")
    return check_upload_name(name)


async def _crypto_officer(inv: Invocation, status: PartitionStatus):
    """The partition's Crypto Officer, by password (a wrong one counts as a failed CO login)."""
    pin = await inv.secret("password", CO_PIN_PROMPT)
    grant = await asyncio.to_thread(
        inv.core.partitions.login, status.serial, Role.CRYPTO_OFFICER, pin
    )
    if grant.must_change:
        raise PinChangeRequired(
            "The Crypto Officer must change its password first (LunaCM: role changepw -name co)."
        )
    return grant


async def partition_backup(inv: Invocation) -> None:
    status = inv.core.partitions.by_name(inv.value("partition") or "")
    name = _backup_name(inv)
    if inv.core.files.exists(name) and not inv.flag("force"):
        raise FileRefused(f"The file area already has '{name}': choose another name, give -force "
                          "to replace it, or delete it (my file delete -file <name>).")
    grant = await _crypto_officer(inv, status)
    data = await asyncio.to_thread(inv.core.cloning.backup, status.serial, grant.generation)
    await asyncio.to_thread(inv.core.files.put, name, data)
    count = inv.core.keystore.count(status.serial)
    inv.core.log(f"Partition {status.serial}: {count} object(s) backed up to '{name}'")
    inv.out(f"Partition {status.name} ({count} object(s)) backed up to '{name}' "
            f"({len(data)} bytes).")
    inv.out(f"Fetch it with: scp admin@<appliance>:{name} .")
    inv.out("Only a partition of the same cloning domain can restore it.")


async def partition_restore(inv: Invocation) -> None:
    status = inv.core.partitions.by_name(inv.value("partition") or "")
    name = _backup_name(inv)
    data = inv.core.files.get(name)
    grant = await _crypto_officer(inv, status)
    replace = inv.flag("replace")
    if replace:
        await inv.confirm(
            f"Restoring with -replace destroys every object of partition {status.name} "
            f"({inv.core.keystore.count(status.serial)} now) before restoring."
        )
    restored, skipped = await asyncio.to_thread(
        inv.core.cloning.restore, status.serial, grant.generation, data, replace=replace
    )
    inv.core.log(f"Partition {status.serial}: {restored} object(s) restored from '{name}'"
                 + (f", {skipped} already present" if skipped else ""))
    inv.out(f"{restored} object(s) restored into partition {status.name} from '{name}'"
            + (f"; {skipped} already present were skipped." if skipped else "."))


COMMANDS_HSM = (
    Command(
        name="showPolicies",
        summary="Show the HSM policies",
        handler=hsm_showpolicies,
        flags=(_VERBOSE,),
        example="hsm showPolicies -verbose",
    ),
    Command(
        name="changePolicy",
        summary="Change an HSM policy (needs the HSM SO logged in)",
        handler=hsm_changepolicy,
        flags=(
            Flag(name="policy", metavar="policy#", required=True, help="policy number"),
            Flag(name="value", metavar="value", required=True, help="new value (0 or 1)"),
            _FORCE,
        ),
        details=(
            "Destructive policies erase all partitions when changed: 7 (Allow cloning) and 12 "
            "(Allow non-FIPS algorithms) either way, 15 (Enable SO reset of partition PIN) when "
            "turned on. Set them before creating partitions."
        ),
        example="hsm changePolicy -policy 15 -value 1 -force",
    ),
)

COMMANDS_PARTITION = (
    Command(
        name="showPolicies",
        summary="Show a partition's policies",
        handler=partition_showpolicies,
        flags=(_PARTITION, _VERBOSE),
        example="partition showPolicies -partition app1",
    ),
    Command(
        name="changePolicy",
        summary="Change a partition policy (needs the Partition SO's password)",
        handler=partition_changepolicy,
        flags=(
            _PARTITION,
            Flag(name="policy", metavar="policy#", required=True, help="policy number"),
            Flag(name="value", metavar="value", required=True, help="new value"),
            Flag(
                name="psopin",
                metavar="password",
                secret=True,
                help="Partition SO password (prompted when left out)",
            ),
            _FORCE,
        ),
        details=(
            "A wrong Partition SO password counts as a failed Partition SO login (10 in a row "
            "zeroize the partition). Turning on 0/4 (cloning) or 1/5 (wrapping) destroys the "
            "partition's objects; 0 and 4 cannot be 1 while HSM policy 7 is 0."
        ),
        example="partition changePolicy -partition app1 -policy 20 -value 5 -psopin 'po-pin'",
    ),
    Command(
        name="backup",
        summary="Back a partition up to a file in the file area (needs the CO's password)",
        handler=partition_backup,
        flags=(
            _PARTITION,
            Flag(name="file", metavar="name.bak", required=True, help="backup file to write"),
            Flag(name="password", metavar="password", secret=True,
                 help="the partition's Crypto Officer password (prompted when left out)"),
            Flag(name="force", takes_value=False, help="replace a file of that name"),
        ),
        details=(
            "The backup holds every token object, encrypted under the partition's cloning "
            "domain: only a partition of the same domain, on any appliance, restores it. Fetch "
            "it with scp or sftp; a wrong password counts as a failed Crypto Officer login."
        ),
        example="partition backup -partition app1 -file app1.bak",
    ),
    Command(
        name="restore",
        summary="Restore a backup file of the file area into a partition (CO's password)",
        handler=partition_restore,
        flags=(
            _PARTITION,
            Flag(name="file", metavar="name.bak", required=True, help="backup file to read"),
            Flag(name="password", metavar="password", secret=True,
                 help="the partition's Crypto Officer password (prompted when left out)"),
            Flag(name="replace", takes_value=False,
                 help="destroy the partition's objects first (asks to type 'proceed')"),
            _FORCE,
        ),
        details=(
            "Objects the partition already has are skipped. Upload a backup with scp first. A "
            "backup of another cloning domain is refused and nothing changes."
        ),
        example="partition restore -partition app1 -file app1.bak",
    ),
    Command(
        name="showInfo",
        summary="Show a partition's label, roles, objects and clients",
        handler=partition_showinfo,
        flags=(_PARTITION,),
        example="partition showInfo -partition app1",
    ),
)
