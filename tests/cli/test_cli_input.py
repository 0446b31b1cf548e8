"""Bad values on the command line: one `error: <code>: <message>` line each, nothing created or changed,
and every value that goes into a URL reaches the service as the value it is (percent-encoded)."""
from __future__ import annotations

import uuid

import pytest

from hsmcloud.cli.client import CliError, arm_path

GROUP_RULE = "is invalid: 1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending in a period."


@pytest.fixture(scope="module")
def tenant(cli, cli_cloud):
    """A subscription with one resource group 'inj' and its network."""
    sub = cli_cloud.new_subscription()
    cli.json("network", "create", "-g", "inj", sub=sub)
    return sub


def snapshot(cli_cloud, sub: str) -> dict:
    """What the subscription holds, read past the CLI: groups, their resources, HSMs."""
    with cli_cloud.http(sub) as c:
        groups = c.get(f"/subscriptions/{sub}/resourcegroups", params={"api-version": "2022-09-01"}).json()["value"]
        resources = c.get(f"/subscriptions/{sub}/resources", params={"api-version": "2022-09-01",
                                                                     "showHiddenTypes": "true"}).json()["value"]
    return {"groups": sorted(g["name"] for g in groups), "resources": sorted(r["id"] for r in resources)}


@pytest.mark.parametrize("hours, shown", [("99999999999", "1e+11"), ("nan", "nan"), ("inf", "inf"), ("0", "0"),
                                          ("-1", "-1")])
def test_token_hours_out_of_range(cli, cli_cloud, hours, shown):
    result = cli("token", "--operator", "--hours", hours, "--state-dir", cli_cloud.settings.state_dir)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (f"error: InvalidArgument: --hours takes a lifetime of more than 0 and at most 8760 "
                             f"hours (a year), not {shown}.\n")


def test_token_errors_follow_the_cli_convention(cli, cli_cloud, tmp_path):
    state = cli_cloud.settings.state_dir
    for args in ([], ["--operator", "--subscription", str(uuid.uuid4())]):
        result = cli("token", *args, "--state-dir", state)
        assert (result.exit_code, result.stderr) == (
            1, "error: InvalidArgument: Give exactly one of --subscription <uuid> or --operator.\n")
    result = cli("token", "--operator", "--state-dir", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (f"error: NoSigningKey: {tmp_path} has no token signing key: start the service there "
                             f"first ('hsmcloud up --state-dir {tmp_path}') or point --state-dir at its state "
                             "directory.\n")
    cli.fails("token", "--subscription", "not-a-guid", "--state-dir", state, code="InvalidSubscriptionId")
    assert cli.ok("token", "--operator", "--hours", "8760", "--state-dir", state).stdout.count(".") == 2  # a JWT


def test_group_with_a_query_string_is_refused_not_truncated(cli, cli_cloud, tenant):
    before = snapshot(cli_cloud, tenant)
    group = "inj?x=1&api-version=1"
    line = cli.fails("hsm", "list", "-g", group, sub=tenant)
    assert line == f"error: InvalidResourceGroupName: Resource group name '{group}' {GROUP_RULE}"
    # The same for every command that names a group: none reads or writes group 'inj'.
    for args in (["network", "show", "-g", group], ["network", "create", "-g", group],
                 ["network", "delete-group", "-g", group, "--yes"],
                 ["hsm", "show", "-n", "hsm1", "-g", group], ["hsm", "delete", "-n", "hsm1", "-g", group, "--yes"],
                 ["hsm", "endpoints", "-n", "hsm1", "-g", group], ["payshield", "status", "-n", "pay1", "-g", group],
                 ["payshield", "release", "-n", "pay1", "-g", group, "--yes"],
                 ["hsm", "create", "-n", "hsm1", "-g", group, "-l", "eastus", "--subnet",
                  f"/subscriptions/{tenant}/resourceGroups/inj/providers/Microsoft.Network/virtualNetworks/"
                  "hsm-vnet/subnets/hsmsubnet"]):
        assert cli.fails(*args, sub=tenant, code="InvalidResourceGroupName").endswith(GROUP_RULE), args
    assert snapshot(cli_cloud, tenant) == before


def test_control_characters_and_slashes_in_names(cli, cli_cloud, tenant):
    before = snapshot(cli_cloud, tenant)
    assert cli.fails("hsm", "show", "-n", "\x01", "-g", "inj", sub=tenant) == (
        "error: InvalidResourceName: The name '\\x01' in the request path is invalid: names cannot contain '/' or "
        "control characters.")
    assert cli.fails("hsm", "show", "-n", "a/b", "-g", "inj", sub=tenant) == (
        "error: InvalidResourceName: The name 'a/b' in the request path is invalid: names cannot contain '/' or "
        "control characters.")
    # A terminal escape in a name is shown, not obeyed.
    line = cli.fails("hsm", "show", "-n", "x\x1b[31m", "-g", "inj", sub=tenant, code="InvalidResourceName")
    assert "\x1b" not in line and "'x\\x1b[31m'" in line
    assert cli.fails("hsm", "list", "-g", "a\x7fb", sub=tenant) == (
        f"error: InvalidResourceGroupName: Resource group name 'a\\x7fb' {GROUP_RULE}")
    # A group that would route the request elsewhere stays one segment.
    assert cli.fails("network", "create", "-g", "inj/providers/Microsoft.Network/virtualNetworks/x",
                     sub=tenant, code="InvalidResourceGroupName")
    # Dot segments are names, not relative paths.
    cli.fails("hsm", "show", "-n", "..", "-g", "inj", sub=tenant, code="ResourceNotFound")
    cli.fails("hsm", "list", "-g", "..", sub=tenant, code="InvalidResourceGroupName")
    assert cli.fails("hsm", "show", "-n", "", "-g", "inj", sub=tenant) == (
        "error: InvalidArgument: An empty name or id cannot be part of a request: give a value.")
    assert snapshot(cli_cloud, tenant) == before


def test_network_names_are_checked_by_the_service(cli, cli_cloud, tenant):
    before = snapshot(cli_cloud, tenant)
    line = cli.fails("network", "create", "-g", "inj", "--vnet-name", "v?x=1", sub=tenant,
                     code="InvalidResourceName")
    assert "'v?x=1'" in line
    cli.fails("network", "create", "-g", "inj", "--subnet-name", "s n", sub=tenant, code="InvalidResourceName")
    cli.fails("network", "create", "-g", "inj", "--gateway-name", "gw&x", sub=tenant, code="InvalidResourceName")
    after = snapshot(cli_cloud, tenant)
    # The group itself was (re)put by the first step of 'network create'; nothing else appeared.
    assert after == before


def test_quota_location_is_one_segment(cli, tenant):
    for args in (["quota", "show"], ["quota", "list"], ["quota", "request", "--per-region", "9"]):
        line = cli.fails(*args, "-l", "eastus?api-version=2025-03-31", sub=tenant,
                         code="LocationNotAvailableForResourceType")
        assert "'eastus?api-version=2025-03-31'" in line, args


def test_operator_values_are_one_segment(cli, cli_cloud, tenant):
    before = snapshot(cli_cloud, tenant)
    cli.fails("operator", "quota", tenant, "--region", "eastus/../westus", code="InvalidResourceName")
    cli.fails("operator", "quota-grant", "../../subscriptions", code="InvalidResourceName")
    cli.fails("operator", "licence", "x\x00", code="InvalidResourceName")
    cli.fails("operator", "force-delete", "--subscription", tenant, "-g", "inj?x=1", "-n", "hsm1",
              code="InvalidResourceGroupName")
    assert snapshot(cli_cloud, tenant) == before


def test_arm_path_encodes_every_segment():
    assert arm_path("subscriptions", "s", "resourceGroups", "rg?x=1&a=b#f") == \
        "/subscriptions/s/resourceGroups/rg%3Fx%3D1%26a%3Db%23f"
    assert arm_path("a", "b/c", "%41", "..") == "/a/b%2Fc/%2541/%2E%2E"
    with pytest.raises(CliError):
        arm_path("resourceGroups", "")
