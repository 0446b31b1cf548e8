"""The LunaSH commands of the appliance: what each does, and the command tree."""

from __future__ import annotations

import asyncio
import re

from ..core.errors import (
    AuthenticationFailed,
    InvalidUsage,
    PartitionNotFound,
    PasswordPolicyViolation,
)
from ..core.passwords import (
    check_admin_password,
    check_domain,
    check_so_password,
    domain_digest,
    domain_secret,
    hash_password_async,
    verify_password_async,
)
from ..core.sealing import HSM_DOMAIN_SECRET_AAD
from ..core.product import (
    FIRMWARE_VERSION,
    HSM_LABEL_MAX_LENGTH,
    HSM_MODEL,
    MAX_PARTITIONS,
    MODEL,
    PARTITION_NAME_MAX_LENGTH,
    PRODUCT_NAME,
    SO_LOGIN_ATTEMPTS,
    SOFTWARE_VERSION,
)
from .command_line import Command, Flag, Group, resolve
from .commands_audit import COMMANDS_AUDIT
from .commands_ntls import CLIENT_GROUP, FILE_GROUP, NTLS_GROUP, REGEN_CERT
from .commands_partitions import COMMANDS_HSM, COMMANDS_PARTITION
from .errors import ConsoleOnly
from .shell import Invocation

_PARTITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_FORCE = Flag(name="force", takes_value=False, help="do not ask to type 'proceed'")
SO_PASSWORD_PROMPT = "Please enter the HSM Administrators' password:\n> "


def _yes(value: bool) -> str:
    return "Yes" if value else "No"


def _check_label(label: str) -> str:
    if not label.strip() or len(label) > HSM_LABEL_MAX_LENGTH or not label.isprintable():
        raise InvalidUsage(
            f"The HSM label must be 1 to {HSM_LABEL_MAX_LENGTH} printable characters."
        )
    return label


def _check_partition_name(name: str) -> str:
    if len(name) > PARTITION_NAME_MAX_LENGTH or not _PARTITION_NAME.fullmatch(name):
        raise InvalidUsage(
            f"'{name}' is not a valid partition name: use 1 to {PARTITION_NAME_MAX_LENGTH} "
            "letters, digits, '_', '-' or '.', starting with a letter or digit."
        )
    return name


# -- my ---------------------------------------------------------------------------------


async def my_password_set(inv: Invocation) -> None:
    session = inv.session
    old = await inv.secret("oldpassword", "Current password: ")
    if not await session.check_admin_password(old):
        raise AuthenticationFailed("The current password is incorrect. The password was not changed.")
    new = await inv.secret("newpassword", "New password: ", confirm_prompt="Retype new password: ")
    check_admin_password(new)
    if new == old:
        raise PasswordPolicyViolation("The new password must differ from the current one.")
    inv.state.set_admin_password(await hash_password_async(new))
    inv.out(f"Password changed for user {session.user}.")


# -- hsm --------------------------------------------------------------------------------


async def hsm_init(inv: Invocation) -> None:
    label = _check_label(inv.value("label") or "")
    hsm = inv.state.hsm()
    if hsm.initialized:
        await _soft_init(inv, label)
        return
    password = await inv.secret(
        "password",
        "Please enter a password for the HSM Administrator (HSM SO):\n> ",
        confirm_prompt="Please re-enter the password to confirm:\n> ",
    )
    check_so_password(password)
    domain = await inv.secret(
        "domain",
        "Please enter the cloning domain to use for initializing this HSM:\n> ",
        confirm_prompt="Please re-enter the cloning domain to confirm:\n> ",
    )
    check_domain(domain)
    so_hash = await hash_password_async(password)
    digest = await asyncio.to_thread(domain_digest, domain)
    secret = await asyncio.to_thread(domain_secret, domain)
    inv.state.hard_init(label=label, domain_digest=digest, so_password_hash=so_hash,
                        domain_secret_sealed=inv.core.sealer.seal(secret, HSM_DOMAIN_SECRET_AAD))
    inv.session.so_logout()
    inv.out(f"'hsm init' successful: the HSM is initialized with label '{label}'.")
    inv.out("Log in as the HSM SO with: hsm login")


async def _soft_init(inv: Invocation, label: str) -> None:
    hsm = inv.state.hsm()
    inv.require_so(hsm)
    given = [f"-{name}" for name in ("password", "domain") if inv.value(name) is not None]
    if given:
        raise InvalidUsage(
            "The HSM is already initialized: re-initializing keeps its HSM SO password and "
            f"cloning domain, so {' and '.join(given)} cannot be given. To set new ones, "
            "zeroize the HSM first (hsm zeroize)."
        )
    await inv.confirm(
        "CAUTION: the HSM is already initialized. Re-initializing it erases all partitions "
        "and their objects; the HSM SO and the cloning domain stay."
    )
    inv.state.soft_init(label=label, generation=hsm.generation)
    inv.core.scrub()
    inv.out(f"'hsm init' successful: the HSM is re-initialized with label '{label}'.")


async def hsm_login(inv: Invocation) -> None:
    hsm = inv.state.require_initialized()
    password = await inv.secret("password", SO_PASSWORD_PROMPT)
    if await verify_password_async(password, hsm.so_password_hash):
        inv.state.record_so_login_success(hsm.generation)
        inv.session.so_login(hsm.generation)
        inv.out("'hsm login' successful.")
        return
    inv.session.so_logout()
    failure = inv.state.record_so_login_failure(hsm.generation)
    if failure.zeroized:
        inv.core.scrub()
        raise AuthenticationFailed(
            "'hsm login' failed: incorrect HSM SO password. That was the "
            f"consecutive bad login number {failure.consecutive_failures}, so the HSM is now ZEROIZED: all "
            "partitions and objects are gone. Initialize it again with: hsm init -label <label>"
        )
    raise AuthenticationFailed(
        f"'hsm login' failed: incorrect HSM SO password. {failure.attempts_left} attempt(s) "
        "left before the HSM is zeroized."
    )


async def hsm_logout(inv: Invocation) -> None:
    if inv.session.so_logout():
        inv.out("'hsm logout' successful.")
    else:
        inv.out("The HSM SO was not logged in in this session.")


async def hsm_show(inv: Invocation) -> None:
    device = inv.state.device()
    hsm = inv.state.hsm()
    partitions = inv.state.partitions()
    rows = [
        ("Appliance Model", f"{MODEL} ({PRODUCT_NAME})"),
        ("Software Version", SOFTWARE_VERSION),
        None,
        ("HSM Label", hsm.label or "(none)"),
        ("Serial #", device.serial),
        ("Firmware", FIRMWARE_VERSION),
        ("HSM Model", HSM_MODEL),
        ("Authentication Method", "Password"),
        ("HSM Initialized", _yes(hsm.initialized)),
        ("HSM Zeroized", _yes(hsm.zeroized)),
        ("HSM Admin login status", "Logged In" if inv.session.so_logged_in(hsm) else "Not Logged In"),
        (
            "HSM Admin login attempts left",
            f"{SO_LOGIN_ATTEMPTS - hsm.failed_so_logins} before HSM zeroization!"
            if hsm.initialized
            else "n/a (HSM not initialized)",
        ),
        ("Partitions", f"{len(partitions)} of {MAX_PARTITIONS}"),
        (
            "FIPS 140-2 Operation",
            "FIPS approved algorithms only (HSM policy 12 = 0)"
            if inv.core.hsm.fips_mode
            else "non-FIPS algorithms allowed (HSM policy 12 = 1)",
        ),
        ("Audit role", "initialized" if inv.core.hsm.auditor().initialized else "not initialized"),
    ]
    inv.out("   HSM Details:")
    inv.out("   ============")
    for row in rows:
        inv.out("" if row is None else f"   {row[0] + ':':<32} {row[1]}")
    inv.out()
    inv.out("   Partitions created on HSM:")
    inv.out("   ==========================")
    for p in partitions:
        inv.out(f"   Partition: {p.serial}, Name: {p.name}")
    if not partitions:
        inv.out("   (none)")


async def hsm_zeroize(inv: Invocation) -> None:
    await inv.confirm(
        "CAUTION: zeroizing erases all partitions and their objects, the HSM SO and the "
        "cloning domain. The HSM must be initialized again before it can be used."
    )
    inv.core.zeroize(reason="HSM zeroized by 'hsm zeroize'.")
    inv.session.so_logout()
    inv.out("The HSM is zeroized. Initialize it again with: hsm init -label <label>")


async def hsm_factory_reset(inv: Invocation) -> None:
    raise ConsoleOnly(
        "'hsm factoryReset' can only be run on the serial console, which tenants cannot "
        "reach. To zeroize the HSM use 'hsm zeroize' (or enter a wrong HSM SO password "
        f"{SO_LOGIN_ATTEMPTS} times at 'hsm login'); for a full device reset ask the provider."
    )


# -- partition --------------------------------------------------------------------------


async def partition_create(inv: Invocation) -> None:
    name = _check_partition_name(inv.value("partition") or "")
    hsm = inv.state.require_initialized()
    inv.require_so(hsm)
    partition = inv.state.create_partition(name, generation=hsm.generation)
    inv.out(f"Partition '{partition.name}' created with serial number {partition.serial}.")


async def partition_delete(inv: Invocation) -> None:
    name = inv.value("partition") or ""
    hsm = inv.state.require_initialized()
    inv.require_so(hsm)
    if not any(p.name.lower() == name.lower() for p in inv.state.partitions()):
        raise PartitionNotFound(f"There is no partition named '{name}'. See: partition list")
    await inv.confirm(
        f"CAUTION: deleting partition '{name}' destroys every object in it."
    )
    partition = inv.state.delete_partition(name, generation=hsm.generation)
    inv.core.scrub()
    inv.out(f"Partition '{partition.name}' ({partition.serial}) deleted.")


async def partition_list(inv: Invocation) -> None:
    partitions = inv.state.partitions()
    statuses = {s.serial: s for s in inv.core.partitions.list()}
    inv.out(f"   {'Partition':<16} {'Name':<32} {'Objects':>7}  {'Status':<15} Label")
    inv.out(f"   {'=' * 16} {'=' * 32} {'=' * 7}  {'=' * 15} {'=' * 32}")
    for p in partitions:
        status = statuses.get(p.serial)
        initialized = status is not None and status.initialized
        label = (status.label if initialized else None) or ""
        shown = "initialized" if initialized else "not initialized"
        inv.out(f"   {p.serial:<16} {p.name:<32} {p.objects:>7}  {shown:<15} {label}".rstrip())
    inv.out()
    inv.out(f"   Partitions: {len(partitions)} of {MAX_PARTITIONS}")


# -- sysconf monitor --------------------------------------------------------------------


async def monitor_enable(inv: Invocation) -> None:
    inv.state.set_monitoring(True)
    inv.out("Provider monitoring enabled: the provider receives health telemetry and sends")
    inv.out("proactive health alerts. It has no administrative or key access.")


async def monitor_disable(inv: Invocation) -> None:
    inv.state.set_monitoring(False)
    inv.out("Provider monitoring disabled: the provider no longer receives health telemetry")
    inv.out("from this appliance and cannot send proactive health alerts.")


async def monitor_show(inv: Invocation) -> None:
    enabled = inv.state.device().monitoring
    inv.out(f"Provider monitoring: {'enabled' if enabled else 'disabled'}")


# -- syslog -----------------------------------------------------------------------------


async def syslog_tail(inv: Invocation) -> None:
    logname = (inv.value("logname") or "messages").lower()
    if logname != "messages":
        raise InvalidUsage(f"'{logname}' is not a log of this appliance; the log is 'messages'.")
    raw = inv.value("entries") or "20"
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise InvalidUsage("-entries must be a number from 1 to 10000.")
    serial = inv.state.device().serial
    for entry in inv.state.log_tail(int(raw), inv.value("search")):
        inv.out(f"{entry.at} {serial} {entry.line}")


# -- help and exit ----------------------------------------------------------------------


async def show_help(inv: Invocation) -> None:
    _, path, _ = resolve(list(inv.line.words), inv.session.commands)
    inv.out(inv.session.help_text(path))


async def exit_shell(inv: Invocation) -> None:
    inv.session.closed = True


COMMANDS = Group(
    name="",
    summary="LunaSH",
    children=(
        Command(
            name="help",
            summary="Show the commands, or help on one command",
            handler=show_help,
            takes_words=True,
            allowed_before_password_change=True,
            example="help hsm init",
        ),
        Command(
            name="exit",
            summary="Leave the shell",
            handler=exit_shell,
            allowed_before_password_change=True,
        ),
        Group(
            name="hsm",
            summary=(
                "HSM commands: init, login, logout, show, zeroize, factoryReset, showPolicies, "
                "changePolicy"
            ),
            children=(
                Command(
                    name="init",
                    summary="Initialize the HSM (hard init when zeroized, soft init otherwise)",
                    handler=hsm_init,
                    flags=(
                        Flag(name="label", metavar="label", required=True, help="HSM label"),
                        Flag(
                            name="domain",
                            metavar="domain",
                            secret=True,
                            help="cloning domain (hard init; prompted when left out)",
                        ),
                        Flag(
                            name="password",
                            metavar="password",
                            secret=True,
                            help="new HSM SO password (hard init; prompted when left out)",
                        ),
                        _FORCE,
                    ),
                    details=(
                        "On a zeroized (or new) HSM this sets the HSM SO password, the label and "
                        "the cloning domain. On an initialized HSM it needs the HSM SO logged "
                        "in, erases all partitions and keeps the SO and the domain."
                    ),
                    example="hsm init -label myHSM -domain myDomain -password 'S0-password' -force",
                ),
                Command(
                    name="login",
                    summary="Log in as the HSM SO (HSM Administrator) for this session",
                    handler=hsm_login,
                    flags=(
                        Flag(
                            name="password",
                            metavar="password",
                            secret=True,
                            help="HSM SO password (prompted when left out)",
                        ),
                    ),
                    details=(
                        f"{SO_LOGIN_ATTEMPTS} consecutive wrong passwords zeroize the HSM."
                    ),
                    example="hsm login",
                ),
                Command(
                    name="logout", summary="Log the HSM SO out of this session", handler=hsm_logout
                ),
                Command(name="show", summary="Show the HSM and its partitions", handler=hsm_show),
                Command(
                    name="zeroize",
                    summary="Erase the HSM: partitions, objects, SO and cloning domain",
                    handler=hsm_zeroize,
                    flags=(_FORCE,),
                    example="hsm zeroize -force",
                ),
                Command(
                    name="factoryReset",
                    summary="Factory reset (serial console only)",
                    handler=hsm_factory_reset,
                    flags=(_FORCE,),
                ),
                *COMMANDS_HSM,
            ),
        ),
        Group(
            name="my",
            summary="Your own appliance account: password set, file list|delete",
            allowed_before_password_change=True,
            children=(
                Group(
                    name="password",
                    summary="Your password: set",
                    allowed_before_password_change=True,
                    children=(
                        Command(
                            name="set",
                            summary="Change your appliance password",
                            handler=my_password_set,
                            allowed_before_password_change=True,
                            flags=(
                                Flag(
                                    name="oldpassword",
                                    metavar="password",
                                    secret=True,
                                    help="current password (prompted when left out)",
                                ),
                                Flag(
                                    name="newpassword",
                                    metavar="password",
                                    secret=True,
                                    help="new password (prompted when left out)",
                                ),
                            ),
                            details=(
                                "The new password needs at least 8 characters from at least 3 "
                                "of: lower case, upper case, digits, other characters."
                            ),
                            example="my password set",
                        ),
                    ),
                ),
                FILE_GROUP,
            ),
        ),
        Group(
            name="partition",
            summary=(
                "Partition commands: create, delete, list, showInfo, showPolicies, changePolicy"
            ),
            children=(
                Command(
                    name="create",
                    summary="Create a partition (needs the HSM SO logged in)",
                    handler=partition_create,
                    flags=(
                        Flag(
                            name="partition", metavar="name", required=True, help="partition name"
                        ),
                    ),
                    details=f"This model holds at most {MAX_PARTITIONS} partitions.",
                    example="partition create -partition app1",
                ),
                Command(
                    name="delete",
                    summary="Delete a partition and its objects (needs the HSM SO logged in)",
                    handler=partition_delete,
                    flags=(
                        Flag(
                            name="partition", metavar="name", required=True, help="partition name"
                        ),
                        _FORCE,
                    ),
                    example="partition delete -partition app1 -force",
                ),
                Command(name="list", summary="List the partitions", handler=partition_list),
                *COMMANDS_PARTITION,
            ),
        ),
        Group(
            name="audit",
            summary="The Audit role: init, login, logout, changepw, show",
            children=COMMANDS_AUDIT,
        ),
        CLIENT_GROUP,
        NTLS_GROUP,
        Group(
            name="syslog",
            summary="Appliance log: tail",
            children=(
                Command(
                    name="tail",
                    summary="Show the last lines of the appliance log",
                    handler=syslog_tail,
                    flags=(
                        Flag(name="logname", metavar="name", help="log name (only 'messages')"),
                        Flag(name="entries", metavar="n", help="number of lines (default 20)"),
                        Flag(name="search", metavar="text", help="only lines containing text"),
                    ),
                    example="syslog tail -entries 5 -search 'HSM Admin Login'",
                ),
            ),
        ),
        Group(
            name="sysconf",
            summary="System configuration: monitor, regenCert",
            children=(
                Group(
                    name="monitor",
                    summary="Provider monitor role (health telemetry): enable, disable, show",
                    children=(
                        Command(
                            name="enable",
                            summary="Let the provider read health telemetry (default)",
                            handler=monitor_enable,
                        ),
                        Command(
                            name="disable",
                            summary="Stop provider health telemetry (no proactive alerts)",
                            handler=monitor_disable,
                        ),
                        Command(
                            name="show",
                            summary="Show whether provider monitoring is on",
                            handler=monitor_show,
                        ),
                    ),
                ),
                REGEN_CERT,
            ),
        ),
    ),
)
