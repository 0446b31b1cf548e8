"""`hsmcloud sp ...`: service principals, the identities Azure tooling signs in with.

A tenant's principal acts on one subscription; an operator's (`--operator`) on /operator only.
`create --json` prints what `az ad sp create-for-rbac` prints (appId, displayName, password,
tenant), ready for `az login --service-principal` or azure-identity's ClientSecretCredential.
With `--cert FILE` the principal authenticates with that certificate's key instead (only the
certificate is sent); `--create-cert` makes a key and certificate here and keeps them in your
client home (`$HSMCLOUD_CLIENT_HOME/service-principals/<appId>.pem`, 0600)."""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from hsmcloud.cli.client import CliError, arm_path
from hsmcloud.cli.common import Ctx, confirm, service_command
from hsmcloud.cli.credentials import client_home

app = typer.Typer(help="Service principals: identities for az login, azure-identity and other Entra clients.",
                  no_args_is_help=True)

OperatorOpt = Annotated[bool, typer.Option("--operator", help="An operator principal (acts on /operator only) "
                                                              "instead of one for --subscription.")]
_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


def _path(cx: Ctx, operator: bool, *rest: str) -> str:
    if operator:
        cx.operator = True  # before the client is made: it takes an operator token
        return arm_path("operator", "servicePrincipals", *rest)
    return arm_path("subscriptions", cx.client.sub, "servicePrincipals", *rest)


def certificate_of(path: Path) -> str:
    """The first PEM certificate in `path` (a file with the key too, as az login takes, is fine:
    only the certificate is sent)."""
    try:
        text = path.expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError("CertificateUnreadable", f"Cannot read {path}: {exc}.") from None
    found = _CERT_BLOCK.search(text)
    if not found:
        raise CliError("InvalidCertificate", f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----).")
    return found.group(0) + "\n"


def new_certificate(name: str, years: int) -> tuple[str, str]:
    """(key PEM, certificate PEM): an RSA-2048 key and a self-signed certificate valid `years`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365 * years)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@service_command(app, "create")
def create(cx: Ctx,
           name: Annotated[Optional[str], typer.Option("--name", "-n", show_default=False,
                                                       help="Display name (default hsmcloud-sp-<time>).")] = None,
           operator: OperatorOpt = False,
           cert: Annotated[Optional[Path], typer.Option("--cert", show_default=False,
                                                        help="Authenticate with this PEM certificate's key "
                                                             "(only the certificate is sent).")] = None,
           create_cert: Annotated[bool, typer.Option("--create-cert",
                                                     help="Make a key and certificate for it here.")] = False,
           years: Annotated[int, typer.Option("--years", min=1, max=10,
                                              help="How long the secret (or made certificate) stays valid.")] = 1):
    """Create a service principal and print its credential (shown this once)."""
    if cert and create_cert:
        raise CliError("InvalidArgument", "Give --cert FILE or --create-cert, not both.")
    body: dict = {"years": years}
    if name:
        body["displayName"] = name
    key_pem = None
    if cert:
        body["certificate"] = certificate_of(cert)
    elif create_cert:
        key_pem, body["certificate"] = new_certificate(name or "hsmcloud service principal", years)
    path = _path(cx, operator)
    sp = cx.client.post(path, body)
    out = {"appId": sp["appId"], "displayName": sp["displayName"], "password": sp.get("password"),
           "tenant": sp["tenant"]}
    if key_pem:
        target = client_home() / "service-principals" / f"{sp['appId']}.pem"
        try:
            _write_private(target, key_pem + body["certificate"])
        except OSError as exc:
            cx.client.send("DELETE", _path(cx, operator, sp["appId"]))  # unusable without its key
            raise CliError("CannotSaveCertificate", f"Cannot write {target}: {exc}. The principal was deleted "
                                                    "again.") from None
        out["fileWithCertAndPrivateKey"] = str(target)

    def human(d: dict) -> None:
        cx.out.fields([("appId", d["appId"]), ("displayName", d["displayName"]), ("tenant", d["tenant"]),
                       ("password", d["password"] or "(none: a certificate credential)")]
                      + ([("certificate", d["fileWithCertAndPrivateKey"])] if key_pem else []))
        pem = d.get("fileWithCertAndPrivateKey") or cert
        credential = f"-p '{d['password']}'" if d["password"] else f"--certificate {pem}"
        cx.out.note(f"Sign in: az login --service-principal -u {d['appId']} {credential} --tenant {d['tenant']}  "
                    "(after the lines 'hsmcloud az-cloud' prints). The password is not shown again.")
    cx.out.result(out, human)


@service_command(app, "list")
def list_(cx: Ctx, operator: OperatorOpt = False):
    """The service principals of the subscription (or the operators')."""
    path = _path(cx, operator)
    items = cx.client.get(path).get("value") or []
    cx.out.result(items, lambda xs: cx.out.table(
        ["App id", "Display name", "Credential", "Expires", "Created"],
        [[x.get("appId"), x.get("displayName"), x.get("credentialType"), (x.get("endDateTime") or "")[:19],
          (x.get("createdDateTime") or "")[:19]] for x in xs], empty="No service principals."))


@service_command(app, "delete")
def delete(cx: Ctx, app_id: Annotated[str, typer.Argument(help="The principal's appId.", show_default=False)],
           operator: OperatorOpt = False,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False):
    """Delete a service principal: its tokens stop working at once."""
    path = _path(cx, operator, app_id)
    if not yes:
        confirm(f"Delete service principal {app_id}? Everything signed in with it loses access at once.")
    cx.client.send("DELETE", path)
    cx.out.result({"appId": app_id, "deleted": True},
                  lambda d: cx.out.print(f"Service principal {app_id} deleted; its tokens no longer work."))
