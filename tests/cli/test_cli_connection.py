"""Finding and trusting the service, tokens, and the one-line errors when something is off."""
from __future__ import annotations

import socket
import uuid

import pytest

from hsmcloud.cli.client import CliError
from hsmcloud.cli.hsm import parse_interfaces, parse_ref, parse_tags, parse_zones


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_service_not_running_says_so(cli, tmp_path):
    url = f"https://127.0.0.1:{free_port()}"
    line = cli.fails("hsm", "list", "--endpoint", url, "--token", "x", "--subscription", str(uuid.uuid4()),
                     code="ServiceNotRunning")
    assert url in line and "hsmcloud up" in line
    # The same through a state directory whose service is gone.
    (tmp_path / "endpoint.json").write_text(f'{{"endpoint": "{url}", "ca": null, "pid": 1}}')
    line = cli.fails("operator", "stamps", "--state-dir", tmp_path, "--token", "x", code="ServiceNotRunning")
    assert url in line and "hsmcloud up" in line


def test_state_dir_without_service(cli, tmp_path):
    line = cli.fails("hsm", "list", "--state-dir", tmp_path, "--subscription", str(uuid.uuid4()),
                     code="ServiceNotRunning")
    assert "hsmcloud up" in line and str(tmp_path) in line


def test_only_loopback_endpoints(cli):
    cli.fails("operator", "stamps", "--endpoint", "https://192.0.2.1:8443", "--token", "x", code="InvalidEndpoint")


def test_endpoint_ca_and_token_without_state_dir(cli, cli_cloud, tmp_path):
    sub = cli_cloud.new_subscription()
    token = cli.ok("token", "--subscription", sub, "--state-dir", cli_cloud.settings.state_dir).stdout.strip()
    args = ["hsm", "list", "--state-dir", tmp_path, "--endpoint", cli_cloud.url]
    # The subscription comes from the token itself.
    assert cli.json(*args, "--ca", cli_cloud.ca, "--token", token) == []
    assert cli.json(*args, "--insecure", env={"HSMCLOUD_TOKEN": token}) == []
    # Without the service's CA the certificate cannot be verified.
    cli.fails(*args, "--token", token, code="TlsVerificationFailed")
    # No key in an empty state directory: no token can be minted there.
    cli.fails(*args, "--insecure", "--subscription", sub, code="NoSigningKey")


def test_subscription_is_required_and_checked(cli):
    cli.fails("hsm", "list", code="SubscriptionRequired")
    cli.fails("hsm", "list", "--subscription", "not-a-guid", code="InvalidSubscriptionId")


def test_token_for_another_subscription_is_refused(cli, cli_cloud):
    sub, other = cli_cloud.new_subscription(), str(uuid.uuid4())
    cli.fails("hsm", "list", "--subscription", other, "--token", cli_cloud.token(sub), code="AuthorizationFailed")


def test_bad_token(cli):
    cli.fails("hsm", "list", "--subscription", str(uuid.uuid4()), "--token", "garbage",
              code="InvalidAuthenticationToken")


def test_argument_errors_are_one_line(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    cli.fails("hsm", "create", "-n", "h1", "-g", "rg", "--subnet", "hsmsubnet", sub=sub, code="InvalidArgument")
    cli.fails("hsm", "wait", "-n", "h1", "-g", "rg", sub=sub, code="InvalidArgument")
    cli.fails("hsm", "show", "-n", "h1", "-g", "nogroup", sub=sub, code="ResourceGroupNotFound")
    cli.fails("quota", "request", "-l", "eastus", sub=sub, code="InvalidArgument")
    cli.fails("hsm", "wait", "-n", "h1", "-g", "rg", "--exists", sub=sub, env={"HSMCLOUD_POLL_INTERVAL": "soon"},
              code="InvalidInterval")


def test_az_style_argument_parsing():
    assert parse_interfaces(["private-ip-address=10.2.1.5"], "-i") == [{"privateIpAddress": "10.2.1.5"}]
    assert parse_interfaces(["10.2.1.6"], "-i") == [{"privateIpAddress": "10.2.1.6"}]
    assert parse_interfaces(['private-ip-address=("10.0.0.5", "10.0.0.6")'], "-i") == [
        {"privateIpAddress": "10.0.0.5"}, {"privateIpAddress": "10.0.0.6"}]
    with pytest.raises(CliError):
        parse_interfaces(["mac=aa"], "-i")
    with pytest.raises(CliError):
        parse_interfaces(["private-ip-address=10.2.1"], "-i")
    sid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/n"
    assert parse_ref(f"id={sid}", "--subnet") == sid
    assert parse_ref(sid, "--subnet") == sid
    assert parse_tags(["Dept=hsm", "Env=dev Team=x", "Owner=Jane Doe", "Empty="]) == {
        "Dept": "hsm", "Env": "dev", "Team": "x", "Owner": "Jane Doe", "Empty": ""}
    with pytest.raises(CliError):
        parse_tags(["novalue"])
    assert parse_zones(["1", "2,3"]) == ["1", "2", "3"]
