"""LunaCM administration over NTLS (the ADMIN opcode): JSON requests, one table of actions.

A request is ``{"action": NAME, ...}``; the answer ``{"ok": true, ...}`` or ``{"ok": false,
"code": "CKR_...", "rv": N, "message": ...}``. Actions that need a role act with the login of
the application's session named by ``"session"`` (made with the ordinary C_Login), so
logins, failed-login counting and lockouts are exactly PKCS#11's. See docs/pkcs11.md,
"Administration over NTLS".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hsmcloud.protocols.pkcs11 import constants as c

from ..core.partitions import Grant, PartitionStatus
from ..core.policies import PARTITION_POLICIES
from ..core.roles import PARTITION_ROLES, Role
from ..pkcs11.errors import ArgumentsBad, CkError, SessionExists, UserNotLoggedIn, rv_of
from ..pkcs11.sessions import Application, Login
from ..pkcs11.token import Pkcs11Service

MAX_REQUEST = 64 * 1024


class AdminActions:
    def __init__(self, service: Pkcs11Service, *, on_reset: Callable[[str], None]) -> None:
        self.service = service
        #: Called after a change that ends every session on a partition.
        self._on_reset = on_reset
        self.core = service.core
        self._actions: dict[str, Callable[[Application, dict], dict]] = {
            "partition.showinfo": self.partition_showinfo,
            "partition.showpolicies": self.partition_showpolicies,
            "partition.changepolicy": self.partition_changepolicy,
            "partition.init": self.partition_init,
            "role.list": self.role_list,
            "role.status": self.role_status,
            "role.init": self.role_init,
            "role.resetpw": self.role_resetpw,
            "role.changepw": self.role_changepw,
        }

    def handle(self, app: Application, request: str) -> tuple[str]:
        """One ADMIN request; every refusal is an ``ok: false`` answer (the outer rv stays OK)."""
        if len(request) > MAX_REQUEST:
            raise ArgumentsBad("The ADMIN request is too long.")
        try:
            body = json.loads(request)
        except ValueError:
            raise ArgumentsBad("The ADMIN request is not JSON.") from None
        if not isinstance(body, dict):
            raise ArgumentsBad("The ADMIN request is not a JSON object.")
        try:
            action = self._actions.get(body.get("action"))
            if action is None:
                raise ArgumentsBad("Unknown action; the actions are " + ", ".join(
                    sorted(self._actions)) + ".")
            answer = {"ok": True, **action(app, body)}
        except Exception as exc:  # typed errors become their CKR code; see rv_of
            rv = rv_of(exc)
            message = getattr(exc, "message", None) or c.rv_name(rv)
            answer = {"ok": False, "code": c.rv_name(rv), "rv": rv, "message": message}
        return (json.dumps(answer),)

    # -- argument helpers -------------------------------------------------------------------

    @staticmethod
    def _arg(body: dict, name: str, kind: type = str):
        value = body.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise ArgumentsBad(f"'{name}' must be a {kind.__name__}.")
        return value

    def _status(self, app: Application, body: dict) -> PartitionStatus:
        return self.service._partition(app, self._arg(body, "partition"))

    def _login(self, app: Application, body: dict) -> tuple[str, Login]:
        handle = self._arg(body, "session", int)
        session = self.service._session(app, handle, allow_expired=True)
        login = app.logins.get(session.serial)
        if login is None:
            raise UserNotLoggedIn("Log in first (role login).")
        return session.serial, login

    @staticmethod
    def _role(body: dict) -> Role:
        try:
            return Role.partition_role(AdminActions._arg(body, "role"))
        except CkError:
            raise
        except Exception:
            raise ArgumentsBad("'role' must be po, co or cu.") from None

    @staticmethod
    def _roles(status: PartitionStatus) -> list[dict[str, Any]]:
        return [{
            "role": role.value, "name": role.title,
            "initialized": status.roles[role].initialized,
            "must_change": status.roles[role].must_change,
            "failed_logins": status.roles[role].failed_logins,
            "threshold": status.threshold(role),
            "locked": status.roles[role].locked,
        } for role in PARTITION_ROLES]

    # -- actions ----------------------------------------------------------------------------

    def partition_showinfo(self, app: Application, body: dict) -> dict:
        status = self._status(app, body)
        info = {"serial": status.serial, "name": status.name,
                "initialized": status.initialized, "label": status.label or "",
                "roles": self._roles(status)}
        if status.initialized:
            info["objects"] = self.core.keystore.count(status.serial)
        cloning = self.core.cloning.info(status.serial)
        info["cloning"] = {"domain_id": cloning.domain_id,
                           "private_key_cloning": cloning.private_key_cloning,
                           "secret_key_cloning": cloning.secret_key_cloning,
                           "hsm_allow_cloning": cloning.hsm_allow_cloning,
                           "hsm_network_replication": cloning.hsm_network_replication}
        return info

    def partition_showpolicies(self, app: Application, body: dict) -> dict:
        status = self._status(app, body)
        return {"serial": status.serial, "policies": [{
            "code": p.code, "name": p.name, "value": status.policies.get(p.code, p.default),
            "default": p.default, "minimum": p.minimum, "maximum": p.maximum,
            "destructive": p.destructive.value, "description": p.description,
        } for p in PARTITION_POLICIES.values()]}

    def partition_changepolicy(self, app: Application, body: dict) -> dict:
        serial, login = self._login(app, body)
        if login.user_type != c.CKU_SO:
            raise UserNotLoggedIn("Only the Partition SO changes partition policies.")
        change = self.core.partitions.change_policy(
            serial, self._arg(body, "policy", int), self._arg(body, "value", int), by=login.grant)
        if change.destroyed:
            self._on_reset(serial)
        return {"policy": change.policy.code, "old": change.old, "new": change.new,
                "destroyed": change.destroyed}

    def partition_init(self, app: Application, body: dict) -> dict:
        status = self._status(app, body)
        domain = body.get("domain")
        if domain is not None and not isinstance(domain, str):
            raise ArgumentsBad("'domain' must be a string.")
        if app.sessions_on(status.serial):
            raise SessionExists("Close this application's sessions on the partition first.")
        new = self.core.partitions.init(status.serial, so_pin=self._arg(body, "so_pin"),
                                        label=self._arg(body, "label"), domain=domain)
        self._on_reset(status.serial)
        return {"serial": new.serial, "label": new.label or ""}

    def role_list(self, app: Application, body: dict) -> dict:
        return {"roles": self._roles(self._status(app, body))}

    def role_status(self, app: Application, body: dict) -> dict:
        status = self._status(app, body)
        roles = self._roles(status)
        if "role" in body:
            wanted = self._role(body).value
            roles = [r for r in roles if r["role"] == wanted]
        login = None
        for session in app.sessions_on(status.serial):
            entry = app.logins.get(session.serial)
            if entry is not None:
                login = entry.grant.role.value
                break
        return {"roles": roles, "logged_in": login}

    def role_init(self, app: Application, body: dict) -> dict:
        serial, login = self._login(app, body)
        role = self._role(body)
        self.core.partitions.init_role(serial, role, self._arg(body, "pin"), by=login.grant)
        return {"role": role.value}

    def role_resetpw(self, app: Application, body: dict) -> dict:
        serial, login = self._login(app, body)
        role = self._role(body)
        self.core.partitions.reset_role(serial, role, self._arg(body, "pin"), by=login.grant)
        return {"role": role.value}

    def role_changepw(self, app: Application, body: dict) -> dict:
        handle = self._arg(body, "session", int)
        session = self.service._session(app, handle, allow_expired=True)
        role = self._role(body)
        self.core.partitions.change_pin(session.serial, role, self._arg(body, "old_pin"),
                                        self._arg(body, "new_pin"))
        login = app.logins.get(session.serial)
        if login is not None and login.grant.role is role:
            app.logins[session.serial] = Login(login.user_type, Grant(
                serial=login.grant.serial, role=role, generation=login.grant.generation,
                must_change=False))
        return {"role": role.value}
