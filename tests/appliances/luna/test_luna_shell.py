"""LunaSH commands, run against the appliance state without SSH."""

from __future__ import annotations

import asyncio

from luna_helpers import (
    ADMIN_PASSWORD,
    FACTORY_PASSWORD,
    SERIAL,
    SO_PASSWORD,
    ScriptedTerminal,
    admin_ready,
    fails,
    initialized,
    ok,
)

from hsmcloud.appliances.luna.lunash.shell import ShellSession
from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore

# -- first login and the admin password ------------------------------------------------


def test_first_login_refuses_commands_until_password_changed(core, state):
    session = ShellSession(core)
    text = fails(session, "hsm show")
    assert "You must change the admin password before running other commands" in text
    assert "my password set" in text
    fails(session, "partition list")
    ok(session, "help")  # help stays available

    ok(session, f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}")

    assert "Serial #" in ok(session, "hsm show")
    assert not state.device().admin_must_change


def test_password_set_rejects_weak_or_wrong_passwords_and_changes_nothing(core, state):
    session = ShellSession(core)
    assert "too short" in fails(
        session, f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword Ab1!"
    )
    assert "too simple" in fails(
        session, f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword alllowercase1"
    )
    assert "incorrect" in fails(
        session, f"my password set -oldpassword wrong -newpassword {ADMIN_PASSWORD}"
    )
    assert state.device().admin_must_change
    assert state.device().admin_password_is_factory


def test_password_set_in_exec_mode_needs_both_flags(core, state):
    session = ShellSession(core)
    text = fails(session, f"my password set -newpassword {ADMIN_PASSWORD}")
    assert "-oldpassword" in text
    assert state.device().admin_must_change


def test_first_interactive_login_prompts_for_the_new_password(core, state):
    session = ShellSession(core)
    terminal = ScriptedTerminal([FACTORY_PASSWORD, ADMIN_PASSWORD, ADMIN_PASSWORD])
    asyncio.run(session.first_login(terminal))
    assert [secret for _, secret in terminal.prompts] == [True, True, True]
    assert "Command Result : 0 (Success)" in terminal.text
    assert not state.device().admin_must_change


def test_interactive_password_change_with_mismatched_confirmation_fails(core, state):
    session = ShellSession(core)
    text = fails(session, "my password set", [FACTORY_PASSWORD, ADMIN_PASSWORD, "Other-Passw0rd"])
    assert "did not match" in text
    assert state.device().admin_must_change


# -- HSM initialization and login ------------------------------------------------------


def test_hard_init_with_exec_flags_initializes_the_hsm(core, state):
    session = admin_ready(core)
    ok(session, f"hsm init -label myHSM -domain myDomain -password {SO_PASSWORD}")
    hsm = state.hsm()
    assert hsm.initialized and hsm.label == "myHSM"
    assert SO_PASSWORD not in (hsm.so_password_hash or "")
    text = ok(session, "hsm show")
    assert "HSM Label:" in text and "myHSM" in text
    assert "HSM Zeroized:" in text and "A790" in text and "7.0.3" in text and "7.2" in text


def test_hard_init_without_a_terminal_needs_the_password_flag(core, state):
    session = admin_ready(core)
    assert "-password" in fails(session, "hsm init -label myHSM -domain myDomain")
    assert not state.hsm().initialized


def test_hard_init_prompts_for_password_and_domain_on_a_terminal(core, state):
    session = admin_ready(core)
    ok(session, "hsm init -label myHSM", [SO_PASSWORD, SO_PASSWORD, "myDomain", "myDomain"])
    assert state.hsm().initialized
    ok(session, f"hsm login -password {SO_PASSWORD}")


def test_soft_init_needs_so_login_and_keeps_the_so_password(core, state):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    other = ShellSession(core)
    assert "hsm login" in fails(other, "hsm init -label renamed -force")

    ok(session, "hsm init -label renamed -force")

    assert state.hsm().label == "renamed"
    assert state.partitions() == []
    ok(ShellSession(core), f"hsm login -password {SO_PASSWORD}")


def test_reinit_without_a_terminal_asks_for_force(core, state):
    session = initialized(core)
    assert "-force" in fails(session, "hsm init -label renamed")
    assert state.hsm().label == "myHSM"


def test_reinit_on_a_terminal_needs_proceed(core, state):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    assert "aborted" in fails(session, "hsm init -label renamed", ["quit"])
    assert len(state.partitions()) == 1
    ok(session, "hsm init -label renamed", ["proceed"])
    assert state.partitions() == []


def test_login_on_a_zeroized_hsm_says_to_initialize(core, state):
    session = admin_ready(core)
    assert "hsm init" in fails(session, "hsm login -password whatever1")
    assert state.hsm().failed_so_logins == 0


def test_three_bad_so_logins_zeroize_the_hsm(core, state):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    assert "2 attempt(s) left" in fails(session, "hsm login -password wrong-1")
    assert "1 attempt(s) left" in fails(session, "hsm login -password wrong-2")
    assert "ZEROIZED" in fails(session, "hsm login -password wrong-3")

    hsm = state.hsm()
    assert hsm.zeroized and hsm.label is None and hsm.so_password_hash is None
    assert state.partitions() == []
    lines = [e.line for e in state.log_tail(50)]
    assert "HSM Admin Login: HSM Zeroized due to three consecutive bad login attempts." in lines
    assert "hsm init" in fails(session, f"hsm login -password {SO_PASSWORD}")
    assert "HSM Zeroized:                    Yes" in ok(session, "hsm show")


def test_bad_so_login_counter_survives_a_restart(tmp_path):
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    session = initialized(core)
    fails(session, "hsm login -password wrong-1")
    fails(session, "hsm login -password wrong-2")
    core.close()

    reopened = ApplianceCore.open(tmp_path / "a", SERIAL)
    try:
        assert reopened.state.hsm().failed_so_logins == 2
        fails(ShellSession(reopened), "hsm login -password wrong-3")
        assert reopened.state.hsm().zeroized
    finally:
        reopened.close()


def test_a_good_so_login_resets_the_bad_login_counter(core, state):
    session = initialized(core)
    fails(session, "hsm login -password wrong-1")
    fails(session, "hsm login -password wrong-2")
    ok(session, f"hsm login -password {SO_PASSWORD}")
    fails(session, "hsm login -password wrong-3")
    assert state.hsm().initialized
    assert state.hsm().failed_so_logins == 1


def test_so_login_prompts_without_echo_on_a_terminal(core, state):
    session = admin_ready(core)
    ok(session, f"hsm init -label myHSM -domain d -password {SO_PASSWORD}")
    terminal = ScriptedTerminal([SO_PASSWORD])
    assert asyncio.run(session.execute("hsm login", terminal)) == 0
    assert terminal.prompts[0][1] is True
    assert SO_PASSWORD not in terminal.text


def test_so_login_is_per_session_and_ends_with_logout(core, state):
    session = initialized(core)
    fails(ShellSession(core), "partition create -partition app1")
    ok(session, "hsm logout")
    assert "hsm login" in fails(session, "partition create -partition app1")


# -- zeroize ---------------------------------------------------------------------------


def test_zeroize_erases_partitions_and_so_and_ends_so_logins(core, state):
    session = initialized(core)
    other = ShellSession(core)
    ok(other, f"hsm login -password {SO_PASSWORD}")
    ok(session, "partition create -partition app1")
    assert "-force" in fails(session, "hsm zeroize")
    assert state.hsm().initialized

    ok(session, "hsm zeroize -force")

    hsm = state.hsm()
    assert hsm.zeroized and hsm.label is None and hsm.domain_digest is None
    assert state.partitions() == []
    assert not other.so_logged_in()
    ok(session, f"hsm init -label again -domain d -password {SO_PASSWORD}")
    assert "hsm login" in fails(other, "partition create -partition app2")


def test_factory_reset_is_refused_over_the_shell(core, state):
    session = initialized(core)
    assert "serial console" in fails(session, "hsm factoryReset -force")
    assert state.hsm().initialized


# -- partitions ------------------------------------------------------------------------


def test_partition_create_needs_an_so_login(core, state):
    session = admin_ready(core)
    ok(session, f"hsm init -label myHSM -domain d -password {SO_PASSWORD}")
    assert "hsm login" in fails(session, "partition create -partition app1")
    assert state.partitions() == []


def test_at_most_ten_partitions(core, state):
    session = initialized(core)
    for n in range(10):
        ok(session, f"partition create -partition p{n}")
    text = fails(session, "partition create -partition p10")
    assert "maximum" in text and "10" in text
    assert len(state.partitions()) == 10
    assert "10 of 10" in ok(session, "partition list")


def test_partition_names_are_unique_and_validated(core, state):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    assert "already exists" in fails(session, "partition create -partition APP1")
    assert "not a valid partition name" in fails(session, "partition create -partition 'a b'")
    assert len(state.partitions()) == 1


def test_partition_delete(core, state):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    assert "no partition named" in fails(session, "partition delete -partition nope -force")
    assert "-force" in fails(session, "partition delete -partition app1")
    ok(session, "partition delete -partition app1 -force")
    assert state.partitions() == []


def test_partition_list_shows_serials(core, state):
    session = initialized(core)
    ok(session, "partition create -partition app1")
    text = ok(session, "partition list")
    assert f"{SERIAL}001" in text and "app1" in text


# -- the command line ------------------------------------------------------------------


def test_unknown_command_gives_a_clear_error_and_changes_nothing(core, state):
    session = admin_ready(core)
    before = (state.hsm(), state.device())
    assert "'foo' is not a valid command. Type 'help' for a list." in fails(session, "foo bar")
    assert "not a valid subcommand of 'hsm'" in fails(session, "hsm explode")
    assert "'-bogus' is not a valid option" in fails(session, "hsm show -bogus")
    assert "needs a value" in fails(session, "hsm init -label")
    assert "needs -label" in fails(session, "hsm init -force")
    assert "Unexpected argument" in fails(session, "hsm show now")
    assert "could not be read" in fails(session, "hsm init -label 'unclosed")
    assert (state.hsm(), state.device()) == before


def test_commands_and_flags_may_be_abbreviated_and_any_case(core, state):
    session = admin_ready(core)
    ok(session, f"HSM INIT -LAB myHSM -dom d -pass {SO_PASSWORD}")
    ok(session, f"hsm logi -p {SO_PASSWORD}")
    ok(session, "par cr -par app1")
    assert "ambiguous" in fails(session, "h")


def test_help_for_a_command_shows_its_usage(core, state):
    session = admin_ready(core)
    text = ok(session, "help hsm init")
    assert "Usage: hsm init -label <label>" in text
    assert "Usage: partition create" in ok(session, "partition create -help")


def test_every_command_is_logged_without_secrets(core, state):
    session = admin_ready(core)
    ok(session, f"hsm init -label myHSM -domain myDomain -password {SO_PASSWORD}")
    fails(session, "secret-typed-at-the-wrong-prompt")
    lines = [e.line for e in state.log_tail(50)]
    assert any(
        line.startswith("lunash [")
        and ": info : 0 : Command: hsm init -label myHSM -domain ******** -password ******** "
        ": admin : 127.0.0.1/40000" in line
        for line in lines
    ), lines
    joined = "\n".join(lines)
    assert SO_PASSWORD not in joined and ADMIN_PASSWORD not in joined
    assert "myDomain" not in joined and "secret-typed" not in joined
    assert "Command: syslog tail" in ok(session, "syslog tail -entries 5")


def test_monitoring_can_be_disabled_and_enabled(core, state):
    session = admin_ready(core)
    assert "enabled" in ok(session, "sysconf monitor show")
    ok(session, "sysconf monitor disable")
    assert not state.device().monitoring
    assert "disabled" in ok(session, "sysconf monitor show")
    ok(session, "sysconf monitor enable")
    assert state.device().monitoring


def test_exit_closes_the_session(core, state):
    session = ShellSession(core)
    ok(session, "exit")
    assert session.closed
