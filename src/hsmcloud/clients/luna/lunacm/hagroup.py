"""LunaCM's `hagroup` commands: HA groups kept in the client configuration ([hagroup NAME]).

HA lives in the client (the PKCS#11 library reads these sections and makes a virtual slot of each
group); the members do not know they are grouped. These commands edit the configuration, look at
the members over NTLS (alive or down, object fingerprints for "needs sync"), and synchronize them
with the appliances' cloning (objects travel only as blobs encrypted for the target's cloning
domain)."""
from __future__ import annotations

from hsmcloud.clients.luna import config as client_config
from hsmcloud.clients.luna.lunacm.shell import Invocation, LunaCmError
from hsmcloud.shellgrammar import Command, Flag, Group

SYNC_WARNING = ("Warning: Synchronize may fail.  The members in slot {a} and slot {b} have conflicting settings "
                "for private key cloning.")


def _backend(inv: Invocation):
    return inv.shell.backend


def _cfg(inv: Invocation) -> client_config.ClientConfig:
    return inv.shell.backend.cfg


def _save(inv: Invocation) -> None:
    try:
        inv.shell.backend.save_config()
    except client_config.ConfigError as exc:
        raise LunaCmError(exc.message, code=exc.code) from None


def _group(inv: Invocation, flag: str = "group") -> client_config.HAGroup:
    try:
        return _cfg(inv).hagroup(inv.value(flag) or "")
    except client_config.ConfigError as exc:
        raise LunaCmError(exc.message, code=exc.code) from None


def _member_slot(inv: Invocation) -> int:
    """The physical slot a -slot or -serialnumber flag names."""
    cfg = _cfg(inv)
    raw_slot, serial = inv.value("slot"), inv.value("serialnumber")
    if (raw_slot is None) == (serial is None):
        raise LunaCmError("Give the member with -slot <id> or -serialnumber <partition serial> (one of them).")
    if raw_slot is not None:
        if not raw_slot.isdigit() or int(raw_slot) >= len(cfg.slots):
            raise LunaCmError(f"'{raw_slot}' is not a physical slot; 'slot list' shows them.",
                              code="CKR_SLOT_ID_INVALID", value=0x3)
        return int(raw_slot)
    for i, slot in enumerate(cfg.slots):
        if slot.partition == serial:
            return i
    for i in range(len(cfg.slots)):
        try:
            if _backend(inv).serial_of(i) == serial:
                return i
        except LunaCmError:
            continue
    raise LunaCmError(f"No configured slot holds partition {serial}; 'slot list' shows them.",
                      code="CKR_SLOT_ID_INVALID", value=0x3)


def _member_slots(inv: Invocation, group: client_config.HAGroup) -> list[int]:
    slots = []
    for member in group.members:
        slot = _cfg(inv).slot_of_member(member)
        if slot is not None:
            slots.append(slot)
    return slots


def _co_login(inv: Invocation, slot: int) -> None:
    """The Crypto Officer logged in on a member (the group's credential: the same on every member)."""
    backend = _backend(inv)
    if backend.logged_in_role(slot) == "co":
        return
    password = inv.secret("password", f"Enter the Crypto Officer password for slot {slot}: ")
    backend.login(slot, "co", password)


def _virtual_slot_id(cfg: client_config.ClientConfig, group: client_config.HAGroup) -> int:
    index = list(cfg.hagroups.values()).index(group)
    return index + (0 if cfg.ha_only else len(cfg.slots))


# ---- the commands -------------------------------------------------------------------------------

def creategroup(inv: Invocation) -> None:
    cfg = _cfg(inv)
    label = inv.value("label") or ""
    try:
        client_config.check_name(label, "HA group")
    except client_config.ConfigError as exc:
        raise LunaCmError(exc.message, code=exc.code) from None
    if any(g.lower() == label.lower() for g in cfg.hagroups):
        raise LunaCmError(f"An HA group labelled '{label}' exists already.", code="HAGroupExists")
    slot = _member_slot(inv)
    key = client_config.member_key(cfg.slots[slot])
    for g in cfg.hagroups.values():
        if key.lower() in (m.lower() for m in g.members):
            raise LunaCmError(f"Slot {slot} is a member of HA group '{g.name}' already.", code="AlreadyMember")
    serial = _backend(inv).serial_of(slot)
    _co_login(inv, slot)
    cfg.hagroups[label] = client_config.HAGroup(name=label, serial=f"1{serial}", members=[key])
    _save(inv)
    inv.out(f"New group with label \"{label}\" created with group number 1{serial}.")
    inv.out(f"Group configuration is:\n\n HA Group Label:  {label}\n HA Group Number: 1{serial}\n"
            f" Group Members:   {serial}\n")


def addmember(inv: Invocation) -> None:
    cfg = _cfg(inv)
    group = _group(inv)
    slot = _member_slot(inv)
    key = client_config.member_key(cfg.slots[slot])
    for g in cfg.hagroups.values():
        if key.lower() in (m.lower() for m in g.members):
            raise LunaCmError(f"Slot {slot} is a member of HA group '{g.name}' already.", code="AlreadyMember")
    if len(group.members) >= client_config.HA_MAX_MEMBERS:
        raise LunaCmError(f"An HA group has at most {client_config.HA_MAX_MEMBERS} members.")
    serial = _backend(inv).serial_of(slot)
    _co_login(inv, slot)
    group.members.append(key)
    _save(inv)
    inv.out(f"Member {serial} successfully added to group {group.name}. New group configuration is:\n")
    _show_group(inv, group, probe=False)
    inv.out("Please use the command \"ha synchronize\" when you are ready to replicate data between all members "
            "of the HA group. (If you have additional members to add, you may wish to wait until you have "
            "added them before synchronizing to save time by avoiding multiple synchronizations.)")


def removemember(inv: Invocation) -> None:
    cfg = _cfg(inv)
    group = _group(inv)
    slot = _member_slot(inv)
    key = client_config.member_key(cfg.slots[slot])
    match = next((m for m in group.members if m.lower() == key.lower()), None)
    if match is None:
        raise LunaCmError(f"Slot {slot} is not a member of HA group '{group.name}'.", code="NotAMember")
    if len(group.members) == 1:
        raise LunaCmError(f"Slot {slot} is the last member of '{group.name}': use 'hagroup deletegroup'.")
    group.members.remove(match)
    group.standby = [m for m in group.standby if m.lower() != key.lower()]
    if group.serial == f"1{_safe_serial(inv, slot)}":
        # removing the founding member changes the group's serial number (as on the real device)
        first = cfg.slot_of_member(group.members[0])
        group.serial = f"1{_safe_serial(inv, first)}"
    _save(inv)
    inv.out(f"Member {cfg.slots[slot].partition} successfully removed from group {group.name}.")


def _safe_serial(inv: Invocation, slot: int) -> str:
    try:
        return _backend(inv).serial_of(slot)
    except LunaCmError:
        return _cfg(inv).slots[slot].partition


def addstandby(inv: Invocation) -> None:
    cfg = _cfg(inv)
    group = _group(inv)
    slot = _member_slot(inv)
    key = client_config.member_key(cfg.slots[slot])
    match = next((m for m in group.members if m.lower() == key.lower()), None)
    if match is None:
        raise LunaCmError(f"Slot {slot} is not a member of '{group.name}': add it with 'hagroup addmember' first.",
                          code="NotAMember")
    if match in group.standby:
        raise LunaCmError(f"Slot {slot} is a standby member already.")
    if len(group.standby) + 1 >= len(group.members):
        raise LunaCmError("At least one member of an HA group must stay active.")
    group.standby.append(match)
    _save(inv)
    inv.out(f"The member in slot {slot} is now a standby member of group {group.name}: it receives every "
            "replicated key and does cryptography only when no active member is alive.")


def removestandby(inv: Invocation) -> None:
    cfg = _cfg(inv)
    group = _group(inv)
    slot = _member_slot(inv)
    key = client_config.member_key(cfg.slots[slot]).lower()
    before = len(group.standby)
    group.standby = [m for m in group.standby if m.lower() != key]
    if len(group.standby) == before:
        raise LunaCmError(f"Slot {slot} is not a standby member of '{group.name}'.")
    _save(inv)
    inv.out(f"The member in slot {slot} is an active member of group {group.name} again.")


def _conflict(a, b) -> bool:
    return (a.domain_id != b.domain_id or a.private_key_cloning != b.private_key_cloning
            or a.secret_key_cloning != b.secret_key_cloning or not a.hsm_allow_cloning or not b.hsm_allow_cloning)


def synchronize(inv: Invocation) -> None:
    backend = _backend(inv)
    group = _group(inv)
    slots = _member_slots(inv, group)
    alive = [s for s in slots if _alive(inv, s)[0]]
    if len(alive) < 2:
        raise LunaCmError(f"Group {group.name} has fewer than two members alive; nothing to synchronize.",
                          code="HA_NOT_ENOUGH_MEMBERS")
    infos = {s: backend.cloning_info(s) for s in alive}
    for i, a in enumerate(alive):
        for b in alive[i + 1:]:
            if _conflict(infos[a], infos[b]):
                inv.out(SYNC_WARNING.format(a=a, b=b))
                raise LunaCmError("Synchronize was not done: add a partition with the same cloning domain and "
                                  "cloning policies (0 and 4) and remove the conflicting one.",
                                  code="CKR_KEY_NOT_WRAPPABLE", value=0x69)
    for s in alive:
        _co_login(inv, s)
    prints = {s: {fp.fingerprint: fp.handle for fp in backend.object_fingerprints(s)} for s in alive}
    union: dict[bytes, int] = {}
    for s in alive:
        for fp in prints[s]:
            union.setdefault(fp, s)
    copied = 0
    for target in alive:
        missing: dict[int, list[int]] = {}
        for fp, source in union.items():
            if fp not in prints[target]:
                missing.setdefault(source, []).append(prints[source][fp])
        for source, handles in missing.items():
            for start in range(0, len(handles), 256):
                backend.clone_objects(source, target, handles[start:start + 256])
                copied += len(handles[start:start + 256])
    inv.out(f"Synchronization completed: {copied} object(s) copied; the {len(alive)} members alive hold the same "
            f"{len(union)} object(s).")
    down = [s for s in slots if s not in alive]
    if down:
        inv.out(f"Members down (not synchronized): slot(s) {', '.join(map(str, down))}.")


def _alive(inv: Invocation, slot: int) -> tuple[bool, str]:
    try:
        return True, _backend(inv).serial_of(slot)
    except LunaCmError as exc:
        return False, exc.message


def recover(inv: Invocation) -> None:
    cfg = _cfg(inv)
    group = _group(inv)
    rows = []
    for member in group.members:
        slot = cfg.slot_of_member(member)
        ok, _ = _alive(inv, slot)
        rows.append((slot, member, ok))
    if not any(ok for _, _, ok in rows):
        raise LunaCmError(f"No member of group {group.name} can be reached; nothing was recovered.",
                          code="CKR_DEVICE_ERROR", value=0x30)
    group.recovery_request += 1
    _save(inv)
    for slot, member, ok in rows:
        inv.out(f"Member in slot {slot} ({member}): {'alive' if ok else 'down: still unreachable'}")
    inv.out(f"Recovery of group {group.name} requested: applications using its virtual slot bring their failed "
            "members back at their next call and replicate to them the keys created meanwhile.")


def retry(inv: Invocation) -> None:
    group = _group(inv)
    raw = inv.value("count") or ""
    try:
        count = int(raw)
    except ValueError:
        raise LunaCmError(f"-count must be a whole number (0 disables auto-recovery, -1 retries forever), "
                          f"not '{raw}'.") from None
    if not -1 <= count <= 1000000:
        raise LunaCmError("-count must be -1 (forever), 0 (disabled) or a count up to 1000000.")
    group.retry_count = count
    _save(inv)
    state = "disabled" if count == 0 else ("enabled, retrying forever" if count < 0 else f"enabled, {count} attempts")
    inv.out(f"HA auto recovery for group {group.name}: {state}.")


def interval(inv: Invocation) -> None:
    group = _group(inv)
    raw = inv.value("interval") or ""
    if not raw.isdigit() or not client_config.HA_MIN_INTERVAL <= int(raw) <= client_config.HA_MAX_INTERVAL:
        raise LunaCmError(f"-interval must be {client_config.HA_MIN_INTERVAL} to {client_config.HA_MAX_INTERVAL} "
                          "seconds.")
    group.interval_seconds = int(raw)
    _save(inv)
    inv.out(f"HA auto recovery poll interval for group {group.name}: {raw} seconds.")


def haonly(inv: Invocation) -> None:
    cfg = _cfg(inv)
    enable, disable, show = inv.flag("enable"), inv.flag("disable"), inv.flag("show")
    if enable + disable + show != 1:
        raise LunaCmError("Give one of -enable, -disable or -show.")
    if show:
        inv.out(f"HA Only mode is {'enabled' if cfg.ha_only else 'disabled'}.")
        return
    cfg.ha_only = bool(enable)
    _save(inv)
    inv.out(f"HA Only mode {'enabled' if enable else 'disabled'}: applications see "
            + ("only the HA virtual slots." if enable else "the physical and the HA virtual slots."))


def deletegroup(inv: Invocation) -> None:
    cfg = _cfg(inv)
    group = _group(inv, "label")
    del cfg.hagroups[group.name]
    _save(inv)
    inv.out(f"The HA group {group.name} was deleted.")


def _needs_sync(inv: Invocation, alive_slots: list[int]) -> str:
    backend = _backend(inv)
    if len(alive_slots) < 2:
        return "no"
    sets = []
    for s in alive_slots:
        if backend.logged_in_role(s) != "co":
            return "unknown (log in as the Crypto Officer to compare the members)"
        sets.append({fp.fingerprint for fp in backend.object_fingerprints(s)})
    return "no" if all(x == sets[0] for x in sets) else "yes"


def _show_group(inv: Invocation, group: client_config.HAGroup, *, probe: bool = True) -> None:
    cfg = _cfg(inv)
    slots = _member_slots(inv, group)
    states = {s: _alive(inv, s) if probe else (True, "") for s in slots}
    alive = [s for s in slots if states[s][0]]
    standby = [m for m in group.standby]
    inv.out(f"\tHA Group Label:  {group.name}")
    inv.out(f"\tHA Group Number:  {group.serial}")
    inv.out(f"\tHA Group Slot ID: {_virtual_slot_id(cfg, group)}")
    inv.out("\tSynchronization: enabled")
    inv.out(f"\tGroup Members:  {', '.join(cfg.slots[s].partition for s in slots)}")
    if probe:
        inv.out(f"\tNeeds sync:  {_needs_sync(inv, alive)}")
    inv.out(f"\tStandby Members:  {', '.join(standby) if standby else '<none>'}")
    inv.out("")
    inv.out(f"\t{'Slot #':<8}{'Member S/N':<22}{'Member Label':<16}Status")
    inv.out(f"\t{'======':<8}{'==========':<22}{'============':<16}======")
    for s in slots:
        ok, detail = states[s]
        serial = detail if ok and detail else cfg.slots[s].partition
        status = ("alive" if ok else "down") if probe else "-"
        inv.out(f"\t{s:<8}{serial:<22}{cfg.slots[s].partition:<16}{status}")
    inv.out("")
    auto = "disabled" if group.retry_count == 0 else "enabled"
    retry_text = "forever" if group.retry_count < 0 else str(group.retry_count)
    inv.out(f"\tHA auto recovery: {auto}")
    inv.out("\tHA recovery mode: activeBasic")
    inv.out(f"\tMaximum auto recovery retry: {retry_text}")
    inv.out(f"\tAuto recovery poll interval: {group.interval_seconds} seconds")
    inv.out(f"\tOnly Show HA Slots: {'yes' if cfg.ha_only else 'no'}")


def listgroups(inv: Invocation) -> None:
    groups = list(_cfg(inv).hagroups.values())
    if not groups:
        inv.out("There are no HA groups: 'hagroup creategroup' makes one.")
        return
    for group in groups:
        _show_group(inv, group)
        inv.out("")


_GROUP = Flag(name="group", metavar="label", required=True, help="the HA group's label")
_SLOT = Flag(name="slot", metavar="id", help="the member's physical slot")
_SERIAL = Flag(name="serialnumber", metavar="serial", help="the member partition's serial number")
_PASSWORD = Flag(name="password", metavar="password", secret=True,
                 help="the Crypto Officer password (asked for when left out)")

HAGROUP = Group(name="hagroup", summary="HA groups (kept in the client configuration): creategroup, addmember, "
                                        "removemember, addstandby, synchronize, recover, retry, interval, haonly, "
                                        "listgroups, deletegroup",
                children=(
    Command(name="creategroup", summary="Create an HA group with its first member", handler=creategroup,
            flags=(Flag(name="label", metavar="label", required=True, help="the group's label"), _SLOT, _SERIAL,
                   _PASSWORD)),
    Command(name="addmember", summary="Add a member partition to a group", handler=addmember,
            flags=(_GROUP, _SLOT, _SERIAL, _PASSWORD)),
    Command(name="removemember", summary="Remove a member from a group", handler=removemember,
            flags=(_GROUP, _SLOT, _SERIAL)),
    Command(name="addstandby", summary="Make a member a standby member", handler=addstandby,
            flags=(_GROUP, _SLOT, _SERIAL)),
    Command(name="removestandby", summary="Make a standby member active again", handler=removestandby,
            flags=(_GROUP, _SLOT, _SERIAL)),
    Command(name="synchronize", summary="Copy to every member the objects it lacks (cloning)", handler=synchronize,
            flags=(_GROUP, _PASSWORD)),
    Command(name="recover", summary="Bring failed members back (applications do it at their next call)",
            handler=recover, flags=(_GROUP,)),
    Command(name="retry", summary="Auto-recovery attempts: 0 disables, -1 forever", handler=retry,
            flags=(_GROUP, Flag(name="count", metavar="n", required=True, help="0, -1 or a count"))),
    Command(name="interval", summary="Seconds between auto-recovery attempts (60 to 1200)", handler=interval,
            flags=(_GROUP, Flag(name="interval", metavar="seconds", required=True, help="60 to 1200"))),
    Command(name="haonly", summary="Show applications only the HA virtual slots", handler=haonly,
            flags=(Flag(name="enable", takes_value=False, help="only HA slots"),
                   Flag(name="disable", takes_value=False, help="physical and HA slots"),
                   Flag(name="show", takes_value=False, help="show the setting"))),
    Command(name="listgroups", summary="The HA groups, their members and state", handler=listgroups),
    Command(name="deletegroup", summary="Delete an HA group (the members keep their objects)", handler=deletegroup,
            flags=(Flag(name="label", metavar="label", required=True, help="the group's label"),)),
))
