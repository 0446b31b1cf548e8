"""The LunaCM commands: what each does with the backend (NTLS), and the command tree."""
from __future__ import annotations

from pathlib import Path

from hsmcloud.clients.luna.lunacm.hagroup import HAGROUP
from hsmcloud.clients.luna.lunacm.shell import Invocation, LunaCmError
from hsmcloud.private_files import write_private
from hsmcloud.shellgrammar import Command, Flag, Group

ROLE_NAMES = {"po": "Partition SO", "so": "Partition SO", "co": "Crypto Officer", "cu": "Crypto User"}
_FORCE = Flag(name="force", takes_value=False, help="do not ask to type 'proceed'")
#: Objects per CLONE_EXPORT (the appliance takes at most 256).
CLONE_BATCH = 256


def _role(inv: Invocation) -> str:
    name = (inv.value("name") or "").lower()
    if name not in ROLE_NAMES:
        raise LunaCmError(f"'{name}' is not a role: use po (Partition SO), co (Crypto Officer) or cu (Crypto "
                          "User).")
    return "po" if name == "so" else name


# ---- slot ----------------------------------------------------------------------------------------

def slot_list(inv: Invocation) -> None:
    slots = inv.shell.backend.slots()
    if not slots:
        inv.out("No slots are configured: 'hsmcloud client connect' adds one.")
        return
    for s in slots:
        rows = [("Slot Id", s.slot_id), ("Label", s.label or "(not initialized)"),
                ("Serial Number", s.serial or s.partition), ("Model", s.model or "-"),
                ("Firmware Version", s.firmware or "-"),
                ("Configuration", "Luna User Partition With SO (PW) Key Export With Cloning Mode"
                 if s.reachable else f"unreachable: {s.problem}"),
                ("Slot Description", f"Net Token Slot on {s.server}")]
        if inv.shell.current_slot == s.slot_id:
            rows.append(("Current", "yes"))
        for key, value in rows:
            inv.out(f"\t{key + ' ->':<24}{value}")
        inv.out()
    cfg = getattr(inv.shell.backend, "cfg", None)
    for index, group in enumerate(cfg.hagroups.values() if cfg is not None else ()):
        # the library's virtual slot of each HA group (LunaCM itself works on the physical slots)
        rows = [("HA Virtual Slot Id", (0 if cfg.ha_only else len(slots)) + index), ("Label", group.name),
                ("Serial Number", group.serial), ("Slot Description", "HA Virtual Card Slot"),
                ("Members", ", ".join(group.members))]
        for key, value in rows:
            inv.out(f"\t{key + ' ->':<24}{value}")
        inv.out()


def slot_set(inv: Invocation) -> None:
    raw = inv.value("slot") or ""
    ids = [s.slot_id for s in inv.shell.backend.slots()]
    if not raw.isdigit() or int(raw) not in ids:
        raise LunaCmError(f"'{raw}' is not a configured slot; the slots are {', '.join(map(str, ids)) or 'none'}.",
                          code="CKR_SLOT_ID_INVALID", value=0x3)
    inv.shell.current_slot = int(raw)
    inv.out(f"Current Slot Id: {raw}")


# ---- partition -----------------------------------------------------------------------------------

def partition_init(inv: Invocation) -> None:
    slot = inv.shell.require_slot()
    label = inv.value("label") or ""
    if not 1 <= len(label) <= 32 or not label.isprintable():
        raise LunaCmError("The partition label must be 1 to 32 printable characters.")
    backend = inv.shell.backend
    if backend.partition_initialized(slot):
        inv.confirm("You are about to initialize the partition. All contents of the partition will be destroyed.")
    password = inv.secret("password", "Enter password for Partition SO: ", confirm=True)
    domain = inv.value("domain")
    backend.init_partition(slot, label=label, so_password=password, domain=domain)
    inv.out(f"Partition in slot {slot} initialized with label '{label}'.")
    inv.out("Next: role login -name po, then role init -name co.")


def partition_showinfo(inv: Invocation) -> None:
    info = inv.shell.backend.partition_info(inv.shell.require_slot())
    for key, value in info.items():
        inv.out(f"\t{key + ' ->':<40}{value}")


def partition_showpolicies(inv: Invocation) -> None:
    policies = inv.shell.backend.policies(inv.shell.require_slot())
    verbose = inv.flag("verbose")
    inv.out("Partition Capabilities / Policies:")
    for p in policies:
        extra = f"  (destructive)" if verbose and p.get("destructive") else ""
        inv.out(f"\t{p['code']:>3}: {p['name']} : {p['value']}{extra}")


def partition_changepolicy(inv: Invocation) -> None:
    slot = inv.shell.require_slot()
    codes, values = (inv.value("policy") or "").split(","), (inv.value("value") or "").split(",")
    if len(codes) != len(values) or not all(c.strip().isdigit() for c in codes) or \
            not all(v.strip().lstrip("-").isdigit() for v in values):
        raise LunaCmError("-policy and -value take numbers, or equally long comma-separated lists of numbers.")
    for code, value in zip(codes, values):
        inv.shell.backend.change_policy(slot, int(code), int(value))
        inv.out(f"Policy {code.strip()} set to {value.strip()}.")


def partition_backup(inv: Invocation) -> None:
    """Back the current slot's partition up to a file on this host (the CO logged in)."""
    slot = inv.shell.require_slot()
    path = Path(inv.value("file") or "").expanduser()
    if not path.name:
        raise LunaCmError("-file names the backup file to write.")
    if path.exists() and not inv.flag("force"):
        raise LunaCmError(f"{path} exists already: choose another file, or give -force to replace it.")
    if not path.parent.is_dir():
        raise LunaCmError(f"The directory {path.parent} does not exist.")
    data = inv.shell.backend.backup(slot)
    write_private(path, data)
    inv.out(f"Partition in slot {slot} backed up to {path} ({len(data)} bytes). Only a partition of the same "
            "cloning domain can restore it.")


def partition_restore(inv: Invocation) -> None:
    """Restore a backup file into the current slot's partition (the CO logged in)."""
    slot = inv.shell.require_slot()
    path = Path(inv.value("file") or "").expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LunaCmError(f"Cannot read the backup file {path}: {exc.strerror or exc}.") from None
    replace = inv.flag("replace")
    if replace:
        inv.confirm("You are about to replace every object of the partition with the backup's objects.")
    restored, skipped = inv.shell.backend.restore(slot, data, replace=replace)
    inv.out(f"Restored {restored} object(s) into the partition in slot {slot}"
            + (f"; {skipped} already present were skipped." if skipped else "."))


def partition_clone(inv: Invocation) -> None:
    """Clone token objects from the current slot's partition to another slot's (CO on both)."""
    source = inv.shell.require_slot()
    raw_target = inv.value("slot") or ""
    if not raw_target.isdigit():
        raise LunaCmError(f"-slot takes the target slot's number, not '{raw_target}'.")
    target = int(raw_target)
    if target == source:
        raise LunaCmError("The target slot is the current slot: choose another one (slot list).")
    backend = inv.shell.backend
    wanted = (inv.value("objects") or "all").strip().lower()
    if wanted in ("all", "0"):
        handles = [f.handle for f in backend.object_fingerprints(source)]
    else:
        parts = [p.strip() for p in wanted.split(",")]
        if not all(p.isdigit() and int(p) > 0 for p in parts):
            raise LunaCmError("-objects takes 'all' (or 0) or a comma-separated list of object handles.")
        handles = [int(p) for p in parts]
    cloned = []
    for start in range(0, len(handles), CLONE_BATCH):
        cloned += backend.clone_objects(source, target, handles[start:start + CLONE_BATCH])
    inv.out(f"Cloned {len(cloned)} object(s) from slot {source} to slot {target}.")


# ---- role ----------------------------------------------------------------------------------------

def role_login(inv: Invocation) -> None:
    role = _role(inv)
    slot = inv.shell.require_slot()
    password = inv.secret("password", f"Enter password for {ROLE_NAMES[role]}: ")
    inv.shell.backend.login(slot, role, password)
    inv.out(f"{ROLE_NAMES[role]} logged in to slot {slot}.")
    if inv.shell.backend.must_change_password(slot, role):
        inv.out(f"The {ROLE_NAMES[role]} password must be changed now: role changepw -name {role}")


def role_logout(inv: Invocation) -> None:
    slot = inv.shell.require_slot()
    inv.shell.backend.logout(slot)
    inv.out(f"Logged out of slot {slot}.")


def role_init(inv: Invocation) -> None:
    role = _role(inv)
    if role == "po":
        raise LunaCmError("The Partition SO is set when the partition is initialized: partition init.")
    slot = inv.shell.require_slot()
    password = inv.secret("password", f"Enter password for {ROLE_NAMES[role]}: ", confirm=True)
    inv.shell.backend.init_role(slot, role, password)
    inv.out(f"{ROLE_NAMES[role]} initialized; it must change its password at its first login.")


def role_changepw(inv: Invocation) -> None:
    role = _role(inv)
    slot = inv.shell.require_slot()
    old = inv.secret("oldpw", f"Enter existing password for {ROLE_NAMES[role]}: ")
    new = inv.secret("newpw", f"Enter new password for {ROLE_NAMES[role]}: ", confirm=True)
    inv.shell.backend.change_password(slot, role, old, new)
    inv.out(f"{ROLE_NAMES[role]} password changed.")


def role_resetpw(inv: Invocation) -> None:
    role = _role(inv)
    if role == "po":
        raise LunaCmError("The Partition SO password cannot be reset; re-initialize the partition instead.")
    slot = inv.shell.require_slot()
    password = inv.secret("password", f"Enter new password for {ROLE_NAMES[role]}: ", confirm=True)
    inv.shell.backend.reset_password(slot, role, password)
    inv.out(f"{ROLE_NAMES[role]} password reset; it must be changed at the next login.")


def role_list(inv: Invocation) -> None:
    roles = inv.shell.backend.roles(inv.shell.require_slot())
    inv.out(f"\t{'Role':<18}{'Initialized':<13}{'Must change':<13}{'Failed logins':<15}Locked")
    for r in roles:
        inv.out(f"\t{r['name']:<18}{_yes(r.get('initialized')):<13}{_yes(r.get('mustChange')):<13}"
                f"{str(r.get('failedLogins', 0)):<15}{_locked(r)}")


def _yes(v) -> str:
    return "yes" if v else "no"


def _locked(r: dict) -> str:
    if not r.get("locked"):
        return "no"
    return "yes (permanent)" if r.get("permanent") else f"yes (until {r.get('lockedUntil') or 'reset'})"


def exit_shell(inv: Invocation) -> None:
    inv.shell.closed = True


def show_help(inv: Invocation) -> None:
    from hsmcloud.shellgrammar import resolve
    _, path, _ = resolve(list(inv.line.words), inv.shell.commands)
    inv.out(inv.shell.help_text(path))


_NAME = Flag(name="name", metavar="role", required=True, help="po, co or cu")

COMMANDS = Group(name="", summary="LunaCM", children=(
    Command(name="help", summary="Show the commands, or help on one", handler=show_help, takes_words=True),
    Command(name="exit", summary="Leave LunaCM", handler=exit_shell),
    Command(name="quit", summary="Leave LunaCM", handler=exit_shell),
    Group(name="slot", summary="Slots: list, set", children=(
        Command(name="list", summary="List the slots and what is in them", handler=slot_list),
        Command(name="set", summary="Choose the current slot", handler=slot_set,
                flags=(Flag(name="slot", metavar="id", required=True, help="slot ID"),)),
    )),
    Group(name="partition", summary="The current slot's partition: init, showinfo, showpolicies, changepolicy, "
                                    "clone, backup, restore",
          children=(
              Command(name="init", summary="Initialize the partition (sets the Partition SO password)",
                      handler=partition_init,
                      flags=(Flag(name="label", metavar="label", required=True, help="partition label"),
                             Flag(name="password", metavar="password", secret=True,
                                  help="new Partition SO password (asked for when left out)"),
                             Flag(name="domain", metavar="domain", secret=True,
                                  help="cloning domain (default: the HSM's)"), _FORCE),
                      details="Re-initializing needs the current Partition SO password and destroys every object."),
              Command(name="showinfo", summary="Show the partition's state", handler=partition_showinfo),
              Command(name="clone", summary="Clone objects to another slot's partition (Crypto Officer on both)",
                      handler=partition_clone,
                      flags=(Flag(name="slot", metavar="id", required=True, help="target slot"),
                             Flag(name="objects", metavar="all|h[,h...]",
                                  help="object handles to clone (default: all token objects)")),
                      details="Both partitions must be in the same cloning domain, with HSM policy 7 and "
                              "partition policies 0/4 at 1; keys travel encrypted between the appliances."),
              Command(name="backup", summary="Back the partition up to a file on this host (Crypto Officer)",
                      handler=partition_backup,
                      flags=(Flag(name="file", metavar="path", required=True, help="backup file to write (0600)"),
                             Flag(name="force", takes_value=False, help="replace an existing file")),
                      details="The file is encrypted under the partition's cloning domain: only a partition "
                              "of the same cloning domain, on any appliance, can restore it."),
              Command(name="restore", summary="Restore a backup file into the partition (Crypto Officer)",
                      handler=partition_restore,
                      flags=(Flag(name="file", metavar="path", required=True, help="backup file to read"),
                             Flag(name="replace", takes_value=False,
                                  help="destroy the partition's objects first (asks to type 'proceed')"),
                             _FORCE),
                      details="Objects the partition already has are skipped. A backup of another cloning "
                              "domain is refused and nothing changes."),
              Command(name="showpolicies", summary="Show the partition's policies", handler=partition_showpolicies,
                      flags=(Flag(name="verbose", takes_value=False, help="mark destructive policies"),)),
              Command(name="changepolicy", summary="Change partition policies (Partition SO logged in)",
                      handler=partition_changepolicy,
                      flags=(Flag(name="policy", metavar="n[,n...]", required=True, help="policy number(s)"),
                             Flag(name="value", metavar="v[,v...]", required=True, help="new value(s)"))),
          )),
    HAGROUP,
    Group(name="role", summary="Partition roles: login, logout, init, changepw, resetpw, list", children=(
        Command(name="login", summary="Log in as a role", handler=role_login,
                flags=(_NAME, Flag(name="password", metavar="password", secret=True,
                                   help="the role's password (asked for when left out)"))),
        Command(name="logout", summary="Log out of the current slot", handler=role_logout),
        Command(name="init", summary="Set a role's first password (po sets co; co sets cu)", handler=role_init,
                flags=(_NAME, Flag(name="password", metavar="password", secret=True,
                                   help="the role's new password (asked for when left out)"))),
        Command(name="changepw", summary="Change a role's password", handler=role_changepw,
                flags=(_NAME, Flag(name="oldpw", metavar="password", secret=True, help="current password"),
                       Flag(name="newpw", metavar="password", secret=True, help="new password"))),
        Command(name="resetpw", summary="Reset a locked-out or forgotten role password (po resets co; co resets "
                                        "cu)", handler=role_resetpw,
                flags=(_NAME, Flag(name="password", metavar="password", secret=True, help="new password"))),
        Command(name="list", summary="The roles of the partition and their state", handler=role_list),
    )),
))
