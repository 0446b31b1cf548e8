"""What an operator sees: fleet fill, devices, billing, orphans, force delete, audit log."""
from __future__ import annotations

import pytest

RG = "ops-rg"


@pytest.fixture(scope="module")
def tenant(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    net = cli.json("network", "create", "-g", RG, "-l", "westus", sub=sub)
    hsm = cli.json("hsm", "create", "-n", "ops-hsm", "-g", RG, "--subnet", net["subnetId"], sub=sub)
    assert hsm["properties"]["provisioningState"] == "Succeeded"
    return {"sub": sub, "hsm": hsm}


def test_subscriptions_lists_the_allowlisted_tenant(cli, tenant):
    subs = {s["subscriptionId"]: s for s in cli.json("operator", "subscriptions")}
    assert subs[tenant["sub"]]["allowlisted"] is True
    assert tenant["sub"] in cli.ok("operator", "subscriptions").stdout


def test_stamps_show_fill_levels(cli, tenant):
    stamps = cli.json("operator", "stamps")
    west_luna = [s for s in stamps if s["region"] == "westus" and s["kind"] == "luna"]
    assert len(west_luna) == 2
    assert sum(s["allocated"] for s in west_luna) == 1
    assert all(s["customerDevices"] == 12 and s["spares"] == 2 and s["testDevices"] == 1 for s in west_luna)
    assert max(s["fillPercent"] for s in west_luna) > 0
    table = cli.ok("operator", "stamps").stdout
    assert "westus" in table and "stamp1" in table and "%" in table and "1/12" in table


def test_devices_show_which_hsm_holds_a_device(cli, tenant):
    devices = cli.json("operator", "devices", "--region", "westus")
    assert devices and all(d["region"] == "westus" for d in devices)
    held = [d for d in devices if d["hsm"] == tenant["hsm"]["id"]]
    assert len(held) == 1 and held[0]["state"] == "allocated" and held[0]["subscriptionId"] == tenant["sub"]
    table = cli.ok("operator", "devices", "--region", "westus").stdout
    assert held[0]["serial"] in table and f"{RG}/ops-hsm" in table


def test_quota_show_and_set(cli, tenant):
    sub = tenant["sub"]
    assert cli.json("operator", "quota", sub, "--region", "westus") == {
        "subscriptionId": sub, "region": "westus", "perRegion": 4, "perStamp": 2}
    assert cli.json("operator", "quota", sub, "--region", "westus", "--per-region", "5")["perRegion"] == 5
    cli.fails("operator", "quota", sub, "--region", "westus", "--per-region", "1", "--per-stamp", "3",
              code="InvalidQuota")
    cli.fails("operator", "quota", sub, "--region", "atlantis", "--per-region", "1", code="UnknownRegion")


def test_group_delete_orphans_then_force_delete(cli, tenant):
    sub = tenant["sub"]
    result = cli.ok("network", "delete-group", "-g", RG, "--yes", sub=sub)
    assert "ORPHANED" in result.stderr and "ops-hsm" in result.stderr
    orphans = cli.json("operator", "orphans")
    assert [o["name"] for o in orphans if o["subscriptionId"] == sub] == ["ops-hsm"]
    assert "ops-hsm" in cli.ok("operator", "orphans").stdout
    bill = cli.json("operator", "billing", "--subscription", sub)
    (line,) = [b for b in bill if b["name"] == "ops-hsm"]
    assert line["orphaned"] is True and line["billedHours"] >= 1 and line["billing"] == "running"
    human = cli.ok("operator", "billing", "--subscription", sub).stdout
    assert "ORPHANED" in human and "total billed hours" in human
    # The tenant cannot reach it any more; the operator reclaims it.
    out = cli.json("operator", "force-delete", "--subscription", sub, "-g", RG, "-n", "ops-hsm")
    assert out["status"] == "Deleted"
    assert sub not in [o["subscriptionId"] for o in cli.json("operator", "orphans")]
    (line,) = [b for b in cli.json("operator", "billing", "--subscription", sub) if b["name"] == "ops-hsm"]
    assert line["billing"] == "ended"
    devices = cli.json("operator", "devices", "--region", "westus")
    assert not [d for d in devices if d["hsm"] == tenant["hsm"]["id"]]
    cli.fails("operator", "force-delete", "--subscription", sub, "-g", RG, "-n", "ops-hsm",
              code="ResourceNotFound")


def test_events_show_the_audit_log(cli, tenant):
    events = cli.json("operator", "events", "--limit", "500")
    actions = {e["action"] for e in events}
    assert {"subscription.allowlist", "hsm.create"} <= actions
    assert len(cli.json("operator", "events", "--limit", "2")) == 2
    assert "hsm.create" in cli.ok("operator", "events", "--limit", "500").stdout


def test_operator_commands_need_an_operator_token(cli, tenant):
    tenant_token = cli.cloud.token(tenant["sub"])
    cli.fails("operator", "stamps", "--token", tenant_token, code="OperatorRoleRequired")
