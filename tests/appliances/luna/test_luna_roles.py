"""Partition roles and the Auditor: failed logins and their consequences (SPEC.md's table)."""

from __future__ import annotations

import pytest
from luna_helpers import (
    CO_PIN,
    CU_PIN,
    PO_PIN,
    SERIAL,
    SteppedClock,
    fails,
    initialized,
    ok,
    partition_ready,
)

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.core.errors import (
    NotAuthorized,
    PartitionChanged,
    PartitionNotInitialized,
    PartitionZeroizedByFailedLogins,
    PinIncorrect,
    PinLengthInvalid,
    ResetNotAllowed,
    RoleLocked,
    RoleLockedByFailedLogins,
    RoleNotInitialized,
)
from hsmcloud.appliances.luna.core.roles import Role

WRONG = "wrong-pin-000"
AUDIT_PASSWORD = "aud1t-passw0rd"


def _wrong_logins(core, serial, role, count):
    """``count`` wrong PINs; returns the attempts-left values reported."""
    left = []
    for _ in range(count):
        with pytest.raises(PinIncorrect) as caught:
            core.partitions.login(serial, role, WRONG)
        left.append(caught.value.attempts_left)
    return left


def _store_a_key(core, serial):
    grant = core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)
    return core.keystore.create(serial, generation=grant.generation,
                                attributes={0: 4, 3: b"k1"}, secret=b"\x11" * 32)


def test_partition_so_tenth_wrong_pin_zeroizes_the_partition(core):
    serial = partition_ready(core).serial
    _store_a_key(core, serial)
    assert _wrong_logins(core, serial, Role.PARTITION_SO, 9) == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert core.partitions.get(serial).initialized  # nine are not enough

    with pytest.raises(PartitionZeroizedByFailedLogins):
        core.partitions.login(serial, Role.PARTITION_SO, WRONG)

    status = core.partitions.get(serial)  # the partition exists on, zeroized
    assert not status.initialized and status.label is None
    assert not any(r.initialized for r in status.roles.values())
    with pytest.raises(PartitionNotInitialized):
        core.keystore.objects(serial)
    with pytest.raises(PartitionNotInitialized):
        core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)  # the old PIN is gone too
    lines = [e.line for e in core.state.log_tail(5)]
    assert any("zeroized after 10 consecutive bad Partition SO logins" in line for line in lines)
    assert core.state.object_count() == 0
    # It can be initialized again, with a new PO PIN, and is empty.
    core.partitions.init(serial, so_pin="new-po-pin-1", label="again")
    core.partitions.login(serial, Role.PARTITION_SO, "new-po-pin-1")
    assert core.keystore.objects(serial) == []


def test_a_correct_pin_resets_the_failed_login_counter(core):
    serial = partition_ready(core).serial
    _wrong_logins(core, serial, Role.PARTITION_SO, 9)
    core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    assert core.partitions.get(serial).roles[Role.PARTITION_SO].failed_logins == 0
    assert _wrong_logins(core, serial, Role.PARTITION_SO, 9)[-1] == 1
    assert core.partitions.get(serial).initialized


def test_crypto_officer_lockout_is_permanent_with_hsm_policy_15_off(core):
    serial = partition_ready(core, cu=True).serial
    _store_a_key(core, serial)
    assert _wrong_logins(core, serial, Role.CRYPTO_OFFICER, 9)[-1] == 1
    with pytest.raises(RoleLockedByFailedLogins):
        core.partitions.login(serial, Role.CRYPTO_OFFICER, WRONG)

    with pytest.raises(RoleLocked) as locked:
        core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)  # even the right PIN
    assert "permanently" in locked.value.message
    with pytest.raises(RoleLocked):
        core.partitions.login(serial, Role.CRYPTO_USER, CU_PIN)  # the CU is locked with the CO
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    with pytest.raises(ResetNotAllowed):
        core.partitions.reset_role(serial, Role.CRYPTO_OFFICER, "new-co-pin-1", by=po)
    assert core.state.object_count() == 1  # locked out, not destroyed

    # Only re-initializing the partition recovers: CO, CU and objects are gone.
    core.partitions.init(serial, so_pin=PO_PIN, label="fresh")
    with pytest.raises(RoleNotInitialized):
        core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)
    assert core.state.object_count() == 0
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    core.partitions.init_role(serial, Role.CRYPTO_OFFICER, CO_PIN, by=po)
    core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)


def test_partition_policy_20_lowers_the_crypto_officer_threshold(core):
    serial = partition_ready(core).serial
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    core.partitions.change_policy(serial, 20, 3, by=po)
    assert _wrong_logins(core, serial, Role.CRYPTO_OFFICER, 2) == [2, 1]
    with pytest.raises(RoleLockedByFailedLogins):
        core.partitions.login(serial, Role.CRYPTO_OFFICER, WRONG)
    assert core.partitions.get(serial).roles[Role.CRYPTO_OFFICER].locked
    # Raising the threshold again does not unlock a role that is locked out.
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    core.partitions.change_policy(serial, 20, 10, by=po)
    with pytest.raises(RoleLocked):
        core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)


def test_with_hsm_policy_15_the_partition_so_resets_a_locked_crypto_officer(core):
    session = initialized(core)
    ok(session, "hsm changePolicy -policy 15 -value 1 -force")
    serial = partition_ready(core, cu=True, session=session).serial
    _store_a_key(core, serial)
    _wrong_logins(core, serial, Role.CRYPTO_OFFICER, 9)
    with pytest.raises(RoleLockedByFailedLogins):
        core.partitions.login(serial, Role.CRYPTO_OFFICER, WRONG)
    with pytest.raises(RoleLocked) as locked:
        core.partitions.login(serial, Role.CRYPTO_USER, CU_PIN)
    assert "because the Crypto Officer is locked out" in locked.value.message

    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    core.partitions.reset_role(serial, Role.CRYPTO_OFFICER, "reset-co-pin-1", by=po)
    grant = core.partitions.login(serial, Role.CRYPTO_OFFICER, "reset-co-pin-1")
    assert grant.must_change  # partition policy 21 (default 1)
    core.partitions.login(serial, Role.CRYPTO_USER, CU_PIN)  # unlocked with the CO
    assert [o.attributes[3] for o in core.keystore.objects(serial)] == [b"k1"]  # nothing lost
    core.partitions.change_pin(serial, Role.CRYPTO_OFFICER, "reset-co-pin-1", "own-co-pin-1")
    assert not core.partitions.login(serial, Role.CRYPTO_OFFICER, "own-co-pin-1").must_change


def test_crypto_user_locks_alone_and_the_crypto_officer_resets_it(core):
    serial = partition_ready(core, cu=True).serial
    _wrong_logins(core, serial, Role.CRYPTO_USER, 9)
    with pytest.raises(RoleLockedByFailedLogins):
        core.partitions.login(serial, Role.CRYPTO_USER, WRONG)
    with pytest.raises(RoleLocked):
        core.partitions.login(serial, Role.CRYPTO_USER, CU_PIN)
    officer = core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)  # the CO is not affected
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    with pytest.raises(NotAuthorized):
        core.partitions.reset_role(serial, Role.CRYPTO_USER, "new-cu-pin-1", by=po)
    core.partitions.reset_role(serial, Role.CRYPTO_USER, "new-cu-pin-1", by=officer)
    core.partitions.login(serial, Role.CRYPTO_USER, "new-cu-pin-1")


def test_failed_logins_are_kept_across_a_restart(tmp_path):
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    serial = partition_ready(core).serial
    _wrong_logins(core, serial, Role.CRYPTO_OFFICER, 7)
    core.close()
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    try:
        assert _wrong_logins(core, serial, Role.CRYPTO_OFFICER, 2) == [2, 1]
        with pytest.raises(RoleLockedByFailedLogins):
            core.partitions.login(serial, Role.CRYPTO_OFFICER, WRONG)
    finally:
        core.close()


def test_a_login_ends_with_a_reinitialized_partition_or_a_lockout(core):
    serial = partition_ready(core, cu=True).serial
    user = core.partitions.login(serial, Role.CRYPTO_USER, CU_PIN)
    officer = core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)
    core.partitions.check(user)
    _wrong_logins(core, serial, Role.CRYPTO_OFFICER, 9)
    with pytest.raises(RoleLockedByFailedLogins):
        core.partitions.login(serial, Role.CRYPTO_OFFICER, WRONG)
    with pytest.raises(RoleLocked):
        core.partitions.check(officer)
    with pytest.raises(RoleLocked):
        core.partitions.check(user)
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    core.partitions.init(serial, so_pin=PO_PIN, label="again")
    with pytest.raises(PartitionChanged):
        core.partitions.check(po)


def test_pin_lengths_follow_partition_policies_25_and_26(core):
    serial = partition_ready(core, co=False).serial
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    with pytest.raises(PinLengthInvalid):
        core.partitions.init_role(serial, Role.CRYPTO_OFFICER, "short", by=po)
    core.partitions.change_policy(serial, 25, 12, by=po)
    with pytest.raises(PinLengthInvalid):
        core.partitions.init_role(serial, Role.CRYPTO_OFFICER, "eleven-char", by=po)
    assert not core.partitions.get(serial).roles[Role.CRYPTO_OFFICER].initialized
    core.partitions.init_role(serial, Role.CRYPTO_OFFICER, "twelve-chars", by=po)


def test_auditor_is_locked_for_ten_minutes_after_ten_wrong_passwords(tmp_path):
    clock = SteppedClock()
    core = ApplianceCore.open(tmp_path / "a", SERIAL, clock=clock)
    try:
        session = initialized(core)
        ok(session, f"audit init -password {AUDIT_PASSWORD} -domain auditDomain")
        for attempt in range(1, 10):
            text = fails(session, "audit login -password wrong-password")
            assert f"{10 - attempt} attempt(s) left" in text
        text = fails(session, "audit login -password wrong-password")
        assert "locked out until 2026-01-15T12:10:00+00:00" in text

        clock.advance(minutes=9, seconds=59)
        assert "locked out" in fails(session, f"audit login -password {AUDIT_PASSWORD}")
        assert "LOCKED OUT until" in ok(session, "audit show")
        clock.advance(seconds=1)
        assert "'audit login' successful." in ok(session, f"audit login -password {AUDIT_PASSWORD}")
        shown = ok(session, "audit show")
        assert "Logged In" in shown and "10 of 10 login attempts left" in shown
        lines = [e.line for e in core.state.log_tail(30)]
        assert any("Auditor locked out for 10 minutes after 10" in line for line in lines)
    finally:
        core.close()


def test_auditor_lockout_survives_a_restart_and_ends_by_the_clock(tmp_path):
    clock = SteppedClock()
    core = ApplianceCore.open(tmp_path / "a", SERIAL, clock=clock)
    session = initialized(core)
    ok(session, f"audit init -password {AUDIT_PASSWORD} -domain auditDomain")
    for _ in range(10):
        fails(session, "audit login -password wrong-password")
    core.close()
    clock.advance(minutes=5)
    core = ApplianceCore.open(tmp_path / "a", SERIAL, clock=clock)
    try:
        with pytest.raises(Exception, match="locked out"):
            core.hsm.audit_login(AUDIT_PASSWORD)
        clock.advance(minutes=5)
        core.hsm.audit_login(AUDIT_PASSWORD)
        assert core.hsm.auditor().failed_logins == 0
    finally:
        core.close()


def test_partition_role_failures_leave_the_hsm_so_alone(core):
    serial = partition_ready(core).serial
    _wrong_logins(core, serial, Role.PARTITION_SO, 5)
    assert core.state.hsm().failed_so_logins == 0
    assert core.state.hsm().initialized
