"""LunaSH ``audit`` commands: the HSM's Audit role (Auditor).

Real LunaSH runs these as a separate ``audit`` appliance user; this appliance has only
``admin``, so ``audit init`` needs the HSM SO logged in instead (as LunaCM's
``role init -name au`` does). Ten wrong Auditor passwords in a row lock the Auditor out for
10 minutes; the lockout ends by itself.
"""

from __future__ import annotations

import asyncio

from ..core.clock import stored
from ..core.errors import AuditorNotInitialized
from ..core.roles import AUDITOR_LOGIN_ATTEMPTS
from .command_line import Command, Flag
from .shell import Invocation

AUDIT_PASSWORD_PROMPT = "Please enter the password:\n> "


async def audit_init(inv: Invocation) -> None:
    hsm = inv.state.require_initialized()
    inv.require_so(hsm)
    password = await inv.secret(
        "password",
        "Please enter a password for the Audit role:\n> ",
        confirm_prompt="Please re-enter the password to confirm:\n> ",
    )
    domain = await inv.secret(
        "domain",
        "Please enter the audit domain:\n> ",
        confirm_prompt="Please re-enter the audit domain to confirm:\n> ",
    )
    if inv.core.hsm.auditor().initialized:
        await inv.confirm(
            "CAUTION: the Audit role is already initialized. Initializing it again replaces "
            "the Auditor's password and audit domain."
        )
    await asyncio.to_thread(
        inv.core.hsm.audit_init, password, domain, so_generation=hsm.generation
    )
    inv.session.auditor_logout()
    inv.out("'audit init' successful: the Audit role is initialized.")
    inv.out("Log in as the Auditor with: audit login")


async def audit_login(inv: Invocation) -> None:
    if not inv.core.hsm.auditor().initialized:
        raise AuditorNotInitialized()
    password = await inv.secret("password", AUDIT_PASSWORD_PROMPT)
    inv.session.auditor_logout()
    await asyncio.to_thread(inv.core.hsm.audit_login, password)
    inv.session.auditor_login(inv.core.hsm.auditor().initialized_at)
    inv.out("'audit login' successful.")


async def audit_logout(inv: Invocation) -> None:
    if inv.session.auditor_logout():
        inv.out("'audit logout' successful.")
    else:
        inv.out("The Auditor was not logged in in this session.")


async def audit_changepw(inv: Invocation) -> None:
    if not inv.core.hsm.auditor().initialized:
        raise AuditorNotInitialized()
    old = await inv.secret("oldpw", "Please enter the current Auditor password:\n> ")
    new = await inv.secret(
        "newpw",
        "Please enter the new Auditor password:\n> ",
        confirm_prompt="Please re-enter the new password to confirm:\n> ",
    )
    await asyncio.to_thread(inv.core.hsm.audit_change_password, old, new)
    inv.out("'audit changepw' successful.")


async def audit_show(inv: Invocation) -> None:
    auditor = inv.core.hsm.auditor()
    now = inv.core.clock()
    if not auditor.initialized:
        inv.out("   Audit role:                 not initialized (audit init)")
        return
    if auditor.locked(now):
        state = f"LOCKED OUT until {stored(auditor.locked_until)} (UTC)"
    else:
        state = f"{auditor.attempts_left(now)} of {AUDITOR_LOGIN_ATTEMPTS} login attempts left"
    logged_in = inv.session.auditor_logged_in(auditor.initialized_at)
    inv.out("   Audit role:                 initialized")
    inv.out(f"   Auditor login status:       {'Logged In' if logged_in else 'Not Logged In'}")
    inv.out(f"   Auditor login attempts:     {state}")


COMMANDS_AUDIT = (
    Command(
        name="init",
        summary="Initialize the Audit role (needs the HSM SO logged in)",
        handler=audit_init,
        flags=(
            Flag(name="password", metavar="password", secret=True,
                 help="the Auditor's password (prompted when left out)"),
            Flag(name="domain", metavar="domain", secret=True,
                 help="the audit domain (prompted when left out)"),
            Flag(name="force", takes_value=False, help="do not ask to type 'proceed'"),
        ),
        details="Replaces an existing Auditor (asks for 'proceed').",
        example="audit init -password 'aud1t-passw0rd' -domain auditDomain",
    ),
    Command(
        name="login",
        summary="Log in as the Auditor for this session",
        handler=audit_login,
        flags=(Flag(name="password", metavar="password", secret=True,
                    help="the Auditor's password (prompted when left out)"),),
        details=(
            f"{AUDITOR_LOGIN_ATTEMPTS} consecutive wrong passwords lock the Auditor out for 10 "
            "minutes; it unlocks by itself."
        ),
        example="audit login",
    ),
    Command(name="logout", summary="Log the Auditor out of this session", handler=audit_logout),
    Command(
        name="changepw",
        summary="Change the Auditor's password",
        handler=audit_changepw,
        flags=(
            Flag(name="oldpw", metavar="password", secret=True, help="current password"),
            Flag(name="newpw", metavar="password", secret=True, help="new password"),
        ),
        example="audit changepw",
    ),
    Command(name="show", summary="Show the Audit role's state", handler=audit_show),
)
