"""What a payment-HSM tenant sees: `hsmcloud payshield ...` against an in-process service.

Expected key check values are computed here with `cryptography` directly (3DES-ECB of zeros),
never with the appliance's code; the LMK check value is cross-checked over raw TCP on HOST1."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess

import httpx
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

RG = "pay-rg"
PAY_SKU = "payShield10K_LMK1_CPS60"
# The in-process appliance uses psec's two-key TDES, which cryptography flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:.*TripleDES.*")
HEADER = b"HEAD"  # the appliance's default header length is 4
# A classic double-length test component; every byte has odd parity.
COMPONENT_1 = "0123456789ABCDEFFEDCBA9876543210"


def odd_parity(data: bytes) -> bytes:
    return bytes(b ^ 1 if bin(b).count("1") % 2 == 0 else b for b in data)


def tdes_kcv(key: bytes) -> str:
    """3DES-ECB of 8 zero bytes, first 3 bytes in hex (computed here, not with hsmcloud code)."""
    if len(key) == 16:
        key = key + key[:8]  # K1 K2 K1: the same cipher as two-key TDES
    enc = Cipher(TripleDES(key), modes.ECB()).encryptor()
    return (enc.update(bytes(8)) + enc.finalize())[:3].hex().upper()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def host_call(address: str, port: int, message: bytes) -> bytes:
    """One payShield host command over raw TCP: 2-byte big-endian length, header, command."""
    body = HEADER + message
    with socket.create_connection((address, port), timeout=10) as s:
        s.settimeout(10)
        s.sendall(len(body).to_bytes(2, "big") + body)
        head = b""
        while len(head) < 2:
            chunk = s.recv(2 - len(head))
            assert chunk, "connection closed"
            head += chunk
        n = int.from_bytes(head, "big")
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
    assert data.startswith(HEADER)
    return data[len(HEADER):]


def make_payment_hsm(cli, sub: str, name: str) -> dict:
    subnet = cli.json("network", "create", "-g", RG, sub=sub)["subnetId"]
    hsm = cli.json("hsm", "create", "-n", name, "-g", RG, "--subnet", subnet, "--sku", PAY_SKU, sub=sub)
    assert hsm["properties"]["provisioningState"] == "Succeeded"
    ep = cli.json("hsm", "endpoints", "-n", name, "-g", RG, sub=sub)
    assert ep["kind"] == "payshield"
    return ep


@pytest.fixture(scope="module")
def pay(cli, cli_cloud):
    """An allowlisted subscription with one Succeeded payment HSM, created through the CLI."""
    sub = cli_cloud.new_subscription()
    ep = make_payment_hsm(cli, sub, "pay1")
    return {"sub": sub, "name": "pay1", "ep": ep, "args": ("-g", RG, "-n", "pay1")}


@pytest.fixture(scope="module")
def cards(cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("cards")
    out = []
    for i, pin in enumerate(("1234", "5678-secret")):
        path = d / f"card{i + 1}.json"
        info = cli.json("payshield", "card", "new", "--out", path, "--pin", pin)
        out.append({"path": path, "pin": pin, "card_id": info["card_id"], "spec": f"{path}:{pin}"})
    return out


@pytest.fixture(scope="module")
def lmk(cli, pay, cards):
    """An LMK loaded on pay1 from the two cards; the check value the CLI printed."""
    human = cli.ok("payshield", "lmk", "load", *pay["args"], "--card", cards[0]["spec"], "--card", cards[1]["spec"],
                   sub=pay["sub"]).stdout
    listed = cli.json("payshield", "lmk", "list", *pay["args"], sub=pay["sub"])
    assert len(listed) == 1
    check_value = listed[0]["check_value"]
    assert check_value in human  # the check value is what the user sees
    return check_value


def test_card_new_writes_a_sealed_card_and_never_overwrites(cli, tmp_path):
    path = tmp_path / "c.json"
    human = cli.ok("payshield", "card", "new", "--out", path, "--pin", "4321").stdout
    doc = json.loads(path.read_text())
    assert doc["card_id"] in human and doc["variant_check_value"] in human
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # Only the sealed component is in the file, and nothing of it is printed.
    assert doc["cipher"]["ciphertext"] not in human
    assert not any(len(w) >= 32 and all(c in "0123456789abcdefABCDEF" for c in w) for w in human.split())
    before = path.read_bytes()
    cli.fails("payshield", "card", "new", "--out", path, "--pin", "4321", code="FileExists")
    assert path.read_bytes() == before
    cli.fails("payshield", "card", "new", "--out", tmp_path / "short.json", "--pin", "12", code="CardError")
    assert not (tmp_path / "short.json").exists()
    # The PIN can be typed instead (twice) rather than given on the command line.
    data = cli.json("payshield", "card", "new", "--out", tmp_path / "typed.json", input="9876\n9876\n")
    assert set(data) == {"file", "card_id", "variant_check_value", "keyblock_check_value"}


def test_card_new_inside_a_git_work_tree_warns_unless_ignored(cli, tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    result = cli.ok("payshield", "card", "new", "--out", repo / "sub" / "card1.json", "--pin", "4321")
    warning = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert warning == [f"warning: {repo / 'sub' / 'card1.json'} is inside the git work tree {repo} and not ignored "
                       "there: a card file holds an LMK component (sealed under its PIN) and must never be "
                       "committed. Move it to a private directory outside any repository (mkdir -m 700 "
                       "~/hsm-cards), or add it to .gitignore."]
    assert oct((repo / "sub" / "card1.json").stat().st_mode & 0o777) == "0o600"
    # Ignored there, or outside any work tree: no warning.
    (repo / ".gitignore").write_text("card*.json\n")
    assert "warning:" not in cli.ok("payshield", "card", "new", "--out", repo / "card2.json", "--pin", "4321").stderr
    private = tmp_path / "cards"
    private.mkdir(mode=0o700)
    assert "warning:" not in cli.ok("payshield", "card", "new", "--out", private / "c.json", "--pin", "4321").stderr


def test_lmk_load_prints_check_value_equal_to_list(cli, pay, lmk):
    listed = cli.json("payshield", "lmk", "list", *pay["args"], sub=pay["sub"])
    assert listed[0]["check_value"] == lmk and listed[0]["scheme"] == "variant" and listed[0]["cards"] == 2
    assert len(lmk) == 16 and lmk.endswith("0" * 10)
    table = cli.ok("payshield", "lmk", "list", *pay["args"], sub=pay["sub"]).stdout
    assert lmk in table and "variant" in table


def test_host_nc_over_tcp_shows_the_same_lmk_check_value(pay, lmk):
    ep = pay["ep"]
    response = host_call(ep["address"], ep["ports"]["host1"], b"NC")
    assert response.startswith(b"ND00")
    assert response[4:20].decode() == lmk


def test_lmk_load_errors_are_one_line(cli, pay, cards, lmk, tmp_path):
    args, sub = pay["args"], pay["sub"]
    cli.fails("payshield", "lmk", "load", *args, "--card", cards[0]["spec"], sub=sub, code="InvalidArgument")
    # The slot is loaded: the appliance's LmkError, not a traceback.
    line = cli.fails("payshield", "lmk", "load", *args, "--card", cards[0]["spec"], "--card", cards[1]["spec"],
                     sub=sub, code="LmkError")
    assert "replace" in line
    line = cli.fails("payshield", "lmk", "load", *args, "--card", cards[0]["spec"],
                     "--card", f"{cards[1]['path']}:0000", "--replace", sub=sub, code="CardError")
    assert "wrong PIN" in line
    cli.fails("payshield", "lmk", "load", *args, "--card", f"{tmp_path / 'none.json'}:1234",
              "--card", cards[1]["spec"], sub=sub, code="CardNotFound")
    # Nothing changed.
    assert cli.json("payshield", "lmk", "list", *args, sub=sub)[0]["check_value"] == lmk


def test_key_load_from_components_gives_the_independent_kcv(cli, pay, lmk):
    c1 = bytes.fromhex(COMPONENT_1)
    c2 = odd_parity(os.urandom(16))
    expected = tdes_kcv(xor(c1, c2))
    data = cli.json("payshield", "key", "load", *pay["args"], "--type", "000", "--component", c1.hex().upper(),
                    "--component", c2.hex(), sub=pay["sub"])
    assert data["kcv"] == expected
    assert data["component_kcvs"] == [tdes_kcv(c1), tdes_kcv(c2)]
    assert data["key"].startswith("U") and len(data["key"]) == 33
    human = cli.ok("payshield", "key", "load", *pay["args"], "--type", "000", "--component", COMPONENT_1,
                   "--component", c2.hex(), sub=pay["sub"]).stdout
    assert expected in human
    # A component with even parity is the appliance's error, on one line.
    cli.fails("payshield", "key", "load", *pay["args"], "--type", "000", "--component", "00" * 16,
              "--component", COMPONENT_1, sub=pay["sub"], code="InvalidRequest")


def test_export_components_needs_the_authorised_state(cli, pay, lmk):
    args, sub = pay["args"], pay["sub"]
    c2 = odd_parity(os.urandom(16))
    loaded = cli.json("payshield", "key", "load", *args, "-t", "000", "-c", COMPONENT_1, "-c", c2.hex(), sub=sub)
    line = cli.fails("payshield", "key", "export-components", *args, "--type", "000", "--key", loaded["key"],
                     sub=sub, code="NotAuthorized")
    assert "authorised state" in line and "hsmcloud payshield authorize" in line
    assert cli.json("payshield", "authorize", *args, sub=sub) == {"slot": 0, "authorised": True}
    assert cli.json("payshield", "lmk", "list", *args, sub=sub)[0]["authorised"] is True
    out = cli.json("payshield", "key", "export-components", *args, "--type", "000", "--key", loaded["key"],
                   "--components", "3", sub=sub)
    parts = [bytes.fromhex(p) for p in out["components"]]
    assert len(parts) == 3
    key = xor(xor(parts[0], parts[1]), parts[2])
    assert tdes_kcv(key) == loaded["kcv"] == tdes_kcv(xor(bytes.fromhex(COMPONENT_1), c2)) == out["kcv"]
    human = cli.ok("payshield", "key", "export-components", *args, "--type", "000", "--key", loaded["key"],
                   sub=sub).stdout
    assert "component 2" in human and loaded["kcv"] in human
    assert "authorised" in cli.ok("payshield", "deauthorize", *args, sub=sub).stdout
    cli.fails("payshield", "key", "export-components", *args, "--type", "000", "--key", loaded["key"], sub=sub,
              code="NotAuthorized")


def test_settings_show_and_change(cli, pay):
    args, sub = pay["args"], pay["sub"]
    assert cli.json("payshield", "settings", *args, sub=sub)["header_length"] == 4
    changed = cli.json("payshield", "settings", *args, "--disable-command", "cw", sub=sub)
    assert changed["disabled_commands"] == ["CW"] and changed["header_length"] == 4
    again = cli.json("payshield", "settings", *args, "--enable-command", "CW", sub=sub)
    assert again["disabled_commands"] == []
    cli.fails("payshield", "settings", *args, "--disable-command", "XX", sub=sub, code="InvalidRequest")


def test_logs_export_jsonl(cli, pay, lmk, tmp_path):
    args, sub = pay["args"], pay["sub"]
    cli.ok("payshield", "authorize", *args, sub=sub)
    cli.ok("payshield", "deauthorize", *args, sub=sub)
    cli.ok("payshield", "key", "load", *args, "--type", "001", "--component", COMPONENT_1,
           "--component", odd_parity(os.urandom(16)).hex(), sub=sub)
    text = cli.ok("payshield", "logs", *args, "--audit", sub=sub).stdout
    entries = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    actions = [e["action"] for e in entries]
    for action in ("lmk.load", "authorize", "deauthorize", "keys.load"):
        assert action in actions, actions
    assert {e["actor"] for e in entries if e["action"] in ("lmk.load", "keys.load")} == {"tenant"}
    # Never a PIN or a clear component in the log.
    assert "5678-secret" not in text and COMPONENT_1 not in text.upper()
    # A failed host command lands in the error log.
    ep = pay["ep"]
    assert host_call(ep["address"], ep["ports"]["host2"], b"QQ").startswith(b"ZZ")
    out = tmp_path / "errors.jsonl"
    assert "written to" in cli.ok("payshield", "logs", *args, "--error", "--out", out, sub=sub).stdout
    errors = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(e.get("command") == "ZZ" or e.get("command") == "QQ" for e in errors), errors
    assert isinstance(cli.json("payshield", "logs", *args, "--audit", sub=sub), list)
    cli.fails("payshield", "logs", *args, sub=sub, code="InvalidArgument")


def test_not_a_payment_hsm(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    subnet = cli.json("network", "create", "-g", "luna-rg", sub=sub)["subnetId"]
    cli.ok("hsm", "create", "-n", "luna1", "-g", "luna-rg", "--subnet", subnet, sub=sub)
    line = cli.fails("payshield", "lmk", "list", "-g", "luna-rg", "-n", "luna1", sub=sub, code="NotAPaymentHsm")
    assert "luna1" in line
    cli.fails("payshield", "lmk", "list", "-g", "luna-rg", "-n", "nope", sub=sub, code="ResourceNotFound")


def test_release_is_required_before_delete(cli, cli_cloud, cards):
    sub = cli_cloud.new_subscription()
    ep = make_payment_hsm(cli, sub, "pay2")
    args = ("-g", RG, "-n", "pay2")
    loaded = cli.json("payshield", "lmk", "load", *args, "--card", cards[0]["spec"], "--card", cards[1]["spec"],
                      sub=sub)
    assert host_call(ep["address"], ep["ports"]["host1"], b"NC")[4:20].decode() == loaded["check_value"]
    cli.fails("hsm", "delete", "-n", "pay2", "-g", RG, "--yes", sub=sub, code="PaymentHsmNotReleased")
    # Without --yes and without an answer nothing is released.
    cli.fails("payshield", "release", *args, sub=sub, input="", code="Cancelled")
    assert len(cli.json("payshield", "lmk", "list", *args, sub=sub)) == 1
    released = cli.json("payshield", "release", *args, "--yes", sub=sub)
    assert released["released"] is True and released["pristine"] is True
    # The device holds nothing of the tenant any more, not even its credential.
    line = cli.fails("payshield", "lmk", "list", *args, sub=sub, code="Unauthorized")
    assert "after a release it holds none" in line and "payshield credential claim -g pay-rg -n pay2" in line
    gone = cli.json("hsm", "delete", "-n", "pay2", "-g", RG, "--yes", sub=sub)
    assert gone["status"] == "Deleted"
    cli.fails("payshield", "lmk", "list", *args, sub=sub, code="ResourceNotFound")
    # The same name again, possibly on the same (recycled) device: the old saved credential is not used.
    again = make_payment_hsm(cli, sub, "pay2")
    assert cli.json("payshield", "lmk", "list", *args, sub=sub) == []
    assert cli.json("payshield", "credential", "show", *args, sub=sub)["serial"] == again["serial"]


# ---- the management credential: the tenant's, on the tenant's side ------------------------------------
def saved_files(home) -> list:
    return sorted((home / "credentials").rglob("*.json"))


def management_status(ep: dict, token: str) -> int:
    with httpx.Client(base_url=f"http://{ep['address']}:{ep['ports']['management']}", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as m:
        return m.get("/lmk").status_code


def test_first_use_claims_the_credential_into_the_client_home(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    ep = make_payment_hsm(cli, sub, "pay-c1")
    args = ("-g", RG, "-n", "pay-c1")
    assert ep["managementCredentialIssuedAt"] is None and "managementToken" not in ep
    assert "not claimed yet" in cli.ok("hsm", "endpoints", *args, sub=sub).stdout
    cli.fails("payshield", "credential", "show", *args, sub=sub, code="NoManagementCredential")
    status = cli.json("payshield", "status", *args, sub=sub)  # the first command claims it
    assert status["serial"] == ep["serial"]
    [path] = [p for p in saved_files(cli.client_home) if p.name.startswith(f"{RG}+pay-c1+")]
    assert path.parent.name == sub and path.name == f"{RG}+pay-c1+{ep['serial']}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (cli.client_home, cli.client_home / "credentials", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    token = json.loads(path.read_text())["token"]
    assert management_status(ep, token) == 200
    shown = cli.ok("payshield", "credential", "show", *args, sub=sub).stdout
    assert token not in shown and "sha256:" in shown and str(path) in shown.replace("\n", "")
    assert cli.json("payshield", "credential", "show", *args, "--reveal", sub=sub)["token"] == token
    issued = cli.json("hsm", "endpoints", *args, sub=sub)["managementCredentialIssuedAt"]
    assert issued and cli.json("payshield", "credential", "show", *args, sub=sub)["issuedAt"] == issued
    # `claim` again keeps the working credential.
    assert cli.json("payshield", "credential", "claim", *args, sub=sub)["fingerprint"] == \
        cli.json("payshield", "credential", "show", *args, sub=sub)["fingerprint"]
    # Neither the service's state directory (store, logs) nor anything it wrote holds the token.
    for file in cli_cloud.settings.state_dir.rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file


def test_rotate_replaces_the_credential_on_the_device(cli, cli_cloud):
    sub = cli_cloud.new_subscription()
    ep = make_payment_hsm(cli, sub, "pay-c2")
    args = ("-g", RG, "-n", "pay-c2")
    cli.ok("payshield", "status", *args, sub=sub)
    before = cli.json("payshield", "credential", "show", *args, "--reveal", sub=sub)
    rotated = cli.json("payshield", "credential", "rotate", *args, sub=sub)
    after = cli.json("payshield", "credential", "show", *args, "--reveal", sub=sub)
    assert after["fingerprint"] == rotated["fingerprint"] != before["fingerprint"]
    assert management_status(ep, before["token"]) == 401  # the old one stopped at once
    assert management_status(ep, after["token"]) == 200
    assert cli.json("payshield", "lmk", "list", *args, sub=sub) == []
    line = cli.fails("payshield", "credential", "rotate", *args, sub=sub, env={"HSMCLOUD_CLIENT_HOME": str(
        cli.client_home.parent / "elsewhere")}, code="NoManagementCredential")
    assert "copy that file" in line and "force delete" in line


def test_a_claimed_device_without_the_saved_credential_names_the_fix(cli, cli_cloud, tmp_path):
    sub = cli_cloud.new_subscription()
    make_payment_hsm(cli, sub, "pay-c3")
    args = ("-g", RG, "-n", "pay-c3")
    cli.ok("payshield", "credential", "claim", *args, sub=sub)
    other = {"HSMCLOUD_CLIENT_HOME": str(tmp_path / "other-machine")}
    for command in (("payshield", "status"), ("payshield", "credential", "claim")):
        line = cli.fails(*command, *args, sub=sub, env=other, code="NoManagementCredential")
        assert "pay-c3" in line and "copy that file" in line and "force delete" in line
    assert not (tmp_path / "other-machine" / "credentials").exists() or not saved_files(tmp_path / "other-machine")


def test_a_claim_or_rotation_whose_answer_was_lost_is_settled_on_next_use(cli, cli_cloud):
    from hsmcloud.cli.credentials import CredentialStore, SavedCredential, token_sha256

    sub = cli_cloud.new_subscription()
    ep = make_payment_hsm(cli, sub, "pay-c4")
    args = ("-g", RG, "-n", "pay-c4")
    store = CredentialStore(cli.client_home)
    # The CLI saved its token and the device took it, but the answer never came back.
    pending = SavedCredential(subscription=sub, resource_group=RG, name="pay-c4", serial=ep["serial"],
                              token="lost-answer-token-0123456789abcdef")
    store.save(pending)
    with cli_cloud.http(sub) as c:
        r = c.post(f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.HardwareSecurityModules/"
                   "dedicatedHSMs/pay-c4/managementCredential", params={"api-version": "2025-03-31"},
                   json={"tokenSha256": token_sha256(pending.token)})
        assert r.status_code == 200
    assert cli.json("payshield", "lmk", "list", *args, sub=sub) == []
    confirmed = store.load(subscription=sub, resource_group=RG, name="pay-c4", serial=ep["serial"])
    assert confirmed.token == pending.token and confirmed.issued_at == r.json()["issuedAt"]
    # A rotation the device took, answer lost: the next command keeps the new token.
    taken = "rotated-token-the-device-took-0123"
    with httpx.Client(base_url=f"http://{ep['address']}:{ep['ports']['management']}", timeout=30,
                      headers={"Authorization": f"Bearer {confirmed.token}"}) as m:
        assert m.post("/tenant/credential", json={"token_sha256": token_sha256(taken)}).status_code == 200
    store.save(confirmed.rotating(taken))
    assert cli.json("payshield", "lmk", "list", *args, sub=sub) == []
    assert store.load(subscription=sub, resource_group=RG, name="pay-c4", serial=ep["serial"]).token == taken
    # A rotation the device never took: the next command keeps the old token.
    store.save(store.load(subscription=sub, resource_group=RG, name="pay-c4", serial=ep["serial"])
               .rotating("never-reached-the-device-0123456"))
    assert cli.json("payshield", "lmk", "list", *args, sub=sub) == []
    kept = store.load(subscription=sub, resource_group=RG, name="pay-c4", serial=ep["serial"])
    assert kept.token == taken and kept.next_token is None


def test_operator_licence_and_firmware_wait_for_their_operations(cli, pay):
    serial = pay["ep"]["serial"]
    lifted = cli.ok("operator", "licence", serial)
    assert f"Device {serial}: calls-per-second limit lifted." in lifted.stdout
    assert "• ApplyingLicence" in lifted.stderr and "• Succeeded" in lifted.stderr  # the steps as they go
    done = cli.json("operator", "licence", serial, "--restore")
    assert (done["status"], done["result"]["licence"]["cps_limit_lifted"]) == ("Succeeded", False)
    accepted = cli.json("operator", "licence", serial, "--no-wait")
    assert accepted["status"] == "InProgress" and accepted["operationId"]
    cli.fails("operator", "firmware", serial, "--version", "1.4a 1.8.3", code="DeviceAllocated")

    free = [d["serial"] for d in cli.json("operator", "devices", "--region", "eastus")
            if d["kind"] == "payshield" and d["role"] == "customer" and d["state"] == "free"]
    spare = free[-1]  # the last one any create would take
    cli.fails("operator", "firmware", spare, "--version", "1.4a 1.8.2", code="FirmwareRefused")
    patched = cli.ok("operator", "firmware", spare, "--version", "1.4a 1.8.3")
    assert f"Device {spare} now runs firmware 1.4a 1.8.3." in patched.stdout
    ops = cli.json("operator", "operations", "--target", spare)
    assert [(o["kind"], o["status"]) for o in ops] == [("device.firmware", "Succeeded"),
                                                        ("device.firmware", "Failed")]
    assert ops[1]["error"]["code"] == "FirmwareRefused"
    assert "device.firmware" in cli.ok("operator", "operations", "--kind", "device.firmware").stdout
    state = {d["serial"]: d["state"] for d in cli.json("operator", "devices", "--region", "eastus")}
    assert state[spare] == "free"  # back in the pool after each patch
