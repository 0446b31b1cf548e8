"""HSM and partition policies: LunaSH commands, destructive changes, dependencies."""

from __future__ import annotations

import asyncio

import pytest
from luna_helpers import (
    CO_PIN,
    PO_PIN,
    ScriptedTerminal,
    admin_ready,
    fails,
    initialized,
    ok,
    partition_ready,
)

from hsmcloud.appliances.luna.core.errors import PolicyNotAllowed, PolicyValueInvalid
from hsmcloud.appliances.luna.core.roles import Role


def _key(core, serial, label=b"k"):
    grant = core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)
    return core.keystore.create(serial, generation=grant.generation, attributes={3: label},
                                secret=b"\x22" * 16)


def test_hsm_showpolicies_lists_the_policies_with_their_defaults(core):
    text = ok(admin_ready(core), "hsm showPolicies -verbose")
    assert "7: Allow cloning : 1  (destructive)" in text
    assert "12: Allow non-FIPS algorithms : 1  (destructive)" in text
    assert "15: Enable SO reset of partition PIN : 0  (destructive when turned on)" in text
    assert "16: Allow network replication : 1" in text


def test_hsm_changepolicy_needs_the_hsm_so(core):
    session = initialized(core)
    ok(session, "hsm logout")
    assert "hsm login" in fails(session, "hsm changePolicy -policy 16 -value 0")
    assert core.hsm.policy(16) == 1


@pytest.mark.parametrize("code, value", [(7, 0), (12, 0), (15, 1)])
def test_destructive_hsm_policies_erase_every_partition(core, code, value):
    session = initialized(core)
    serial = partition_ready(core, session=session).serial
    _key(core, serial)
    assert "-force" in fails(session, f"hsm changePolicy -policy {code} -value {value}")
    assert core.state.partitions()  # refused without a terminal: nothing erased

    text = ok(session, f"hsm changePolicy -policy {code} -value {value} -force")
    assert f"is now set to value: {value}" in text and "1 partition(s) were erased" in text
    assert core.state.partitions() == [] and core.state.object_count() == 0
    assert core.hsm.policy(code) == value
    assert core.state.hsm().initialized  # the HSM, its SO and domain stay


def test_a_destructive_change_asks_for_proceed_on_a_terminal(core):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    terminal = ScriptedTerminal(["quit"])
    asyncio.run(session.execute("hsm changePolicy -policy 12 -value 0", terminal))
    assert "erasing all partitions" in terminal.text and "Command aborted" in terminal.text
    assert core.hsm.policy(12) == 1 and len(core.state.partitions()) == 1
    terminal = ScriptedTerminal(["proceed"])
    assert asyncio.run(session.execute("hsm changePolicy -policy 12 -value 0", terminal)) == 0
    assert core.hsm.fips_mode and core.state.partitions() == []
    assert "non-FIPS" not in ok(session, "hsm show").split("FIPS 140-2 Operation:")[1].splitlines()[0]


def test_turning_policy_15_off_and_policy_16_are_not_destructive(core):
    session = initialized(core)
    ok(session, "hsm changePolicy -policy 15 -value 1 -force")
    ok(session, "partition create -partition app1")
    ok(session, "hsm changePolicy -policy 15 -value 0")
    ok(session, "hsm changePolicy -policy 16 -value 0")
    assert [p.name for p in core.state.partitions()] == ["app1"]


def test_hsm_policies_survive_zeroize_and_reject_bad_values(core):
    session = initialized(core)
    ok(session, "hsm changePolicy -policy 16 -value 0")
    assert "from 0 to 1" in fails(session, "hsm changePolicy -policy 16 -value 2")
    assert "the HSM policies are 7, 12, 15, 16, 21" in fails(session, "hsm changePolicy -policy 3 -value 1")
    ok(session, "hsm zeroize -force")
    assert core.hsm.policy(16) == 0  # hsm zeroize keeps the policies


def test_partition_cloning_policies_are_bound_by_hsm_policy_7(core):
    session = initialized(core)
    ok(session, "hsm changePolicy -policy 7 -value 0 -force")
    serial = partition_ready(core, session=session).serial
    shown = ok(session, "partition showPolicies -partition app1")
    assert "0: Allow private key cloning : 0" in shown and "4: Allow secret key cloning : 0" in shown
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    for code in (0, 4):
        with pytest.raises(PolicyNotAllowed):
            core.partitions.change_policy(serial, code, 1, by=po)
    text = fails(session, f"partition changePolicy -partition app1 -policy 0 -value 1 -psopin {PO_PIN} -force")
    assert "HSM policy 7 (Allow cloning) is 0" in text


@pytest.mark.parametrize("code", [0, 1, 4, 5])
def test_turning_on_a_cloning_or_wrapping_policy_destroys_the_objects(core, code):
    serial = partition_ready(core).serial
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    if core.partitions.get(serial).policies[code] == 1:
        core.partitions.change_policy(serial, code, 0, by=po)  # turning off keeps the objects
    _key(core, serial)
    assert core.keystore.count(serial) == 1
    change = core.partitions.change_policy(serial, code, 1, by=po)
    assert change.destroyed == 1 and core.keystore.count(serial) == 0
    assert core.state.object_count() == 0


def test_partition_changepolicy_in_lunash_checks_the_partition_so_password(core):
    session = initialized(core)
    serial = partition_ready(core, session=session).serial
    _key(core, serial)
    text = fails(session, "partition changePolicy -partition app1 -policy 20 -value 5 -psopin wrong-pin-1")
    assert "Incorrect Partition SO PIN. 9 attempt(s) left" in text
    assert core.partitions.get(serial).roles[Role.PARTITION_SO].failed_logins == 1
    text = ok(session, f"partition changePolicy -partition app1 -policy 20 -value 5 -psopin {PO_PIN}")
    assert '"Max failed user logins allowed" is now set to value: 5' in text
    assert core.partitions.get(serial).max_failed_logins == 5
    assert "-psopin ********" in "\n".join(e.line for e in core.state.log_tail(5))
    assert PO_PIN not in "\n".join(e.line for e in core.state.log_tail(50))

    assert "-force" in fails(session, f"partition changePolicy -partition app1 -policy 1 -value 1 -psopin {PO_PIN}")
    assert core.keystore.count(serial) == 1
    text = ok(session, f"partition changePolicy -partition app1 -policy 1 -value 1 -psopin {PO_PIN} -force")
    assert "1 object(s) were destroyed" in text and core.keystore.count(serial) == 0


def test_partition_policy_values_are_checked(core):
    serial = partition_ready(core).serial
    po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
    with pytest.raises(PolicyValueInvalid):
        core.partitions.change_policy(serial, 20, 11, by=po)  # cannot be raised above 10
    with pytest.raises(PolicyValueInvalid):
        core.partitions.change_policy(serial, 20, 0, by=po)
    core.partitions.change_policy(serial, 26, 20, by=po)
    with pytest.raises(PolicyNotAllowed):
        core.partitions.change_policy(serial, 25, 21, by=po)
    assert core.partitions.get(serial).policies[25] == 8


def test_partition_showinfo_and_list_show_roles_and_state(core):
    session = initialized(core)
    serial = partition_ready(core, session=session).serial
    ok(session, "partition create -partition raw")
    _key(core, serial)
    info = ok(session, "partition showInfo -partition app1")
    assert "Label:                   app1-label" in info
    assert "Objects:                 1" in info
    assert "Crypto Officer:          initialized, 0 of 10 failed logins, must change its PIN" in info
    assert "Crypto User:             not initialized" in info
    listed = ok(session, "partition list")
    assert f"{serial}     app1" in listed and "initialized     app1-label" in listed
    assert "not initialized" in listed.split("raw")[1].splitlines()[0]
