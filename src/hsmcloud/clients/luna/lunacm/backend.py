"""What LunaCM does over NTLS: one connection per configured appliance, one session per slot it uses.

Slots come from the client configuration; each is resolved to a partition serial with
LIST_PARTITIONS. Logins are PKCS#11 logins (C_Login on the slot's session); what PKCS#11 has no
function for goes through the ADMIN opcode."""
from __future__ import annotations

import ssl
from dataclasses import dataclass

from hsmcloud.clients.luna import config as client_config
from hsmcloud.clients.luna.lunacm.shell import LunaCmError
from hsmcloud.clients.luna.ntls_client import NtlsClient, Pkcs11Error, clone_objects
from hsmcloud.protocols.pkcs11 import constants as c

USER_TYPES = {"po": c.CKU_SO, "co": c.CKU_USER, "cu": c.CKU_CRYPTO_USER}


@dataclass(frozen=True, kw_only=True)
class SlotView:
    slot_id: int
    server: str
    partition: str
    serial: str | None = None
    label: str | None = None
    initialized: bool = False
    reachable: bool = False
    problem: str | None = None
    model: str | None = None
    firmware: str | None = None


#: What the cloning, backup and restore refusals mean to a LunaCM user.
CLONING_MESSAGES = {
    c.CKR_WRAPPED_KEY_INVALID: "The partitions are not in the same cloning domain (or the data was "
                               "modified): a partition accepts clones and backups of its own cloning "
                               "domain only. Nothing was changed.",
    c.CKR_KEY_NOT_WRAPPABLE: "The cloning policies forbid it: HSM policy 7 (Allow cloning) and partition "
                             "policies 0 (private key cloning) and 4 (secret key cloning) must be 1 on "
                             "both partitions. Nothing was changed.",
    c.CKR_USER_NOT_LOGGED_IN: "Log in as the Crypto Officer first (role login -name co).",
    c.CKR_OPERATION_NOT_INITIALIZED: "The clone offer is used already or expired; nothing was changed.",
    c.CKR_DATA_INVALID: "That is not an hsmcloud backup file.",
}


def _error(exc: Pkcs11Error, messages: dict[int, str] | None = None) -> LunaCmError:
    message = exc.message if getattr(exc, "message", None) else None
    if message is None and messages:
        message = messages.get(exc.rv)
    return LunaCmError(message or f"The appliance answered {exc.name}.", code=exc.name, value=exc.rv)


class NtlsBackend:
    def __init__(self, cfg: client_config.ClientConfig | None = None) -> None:
        self.cfg = cfg or client_config.load()
        self._clients: dict[str, NtlsClient] = {}
        self._sessions: dict[int, int] = {}
        self._logged_in: dict[int, str] = {}

    # ---- connections ------------------------------------------------------------------------
    def _client(self, server_name: str) -> NtlsClient:
        client = self._clients.get(server_name)
        if client is not None:
            return client
        if self.cfg.client is None:
            raise LunaCmError("This client has no certificate: 'hsmcloud client cert new --name <name>'.",
                              code="NO_CLIENT_CERTIFICATE")
        server = self.cfg.servers[server_name]
        try:
            client = NtlsClient.connect(server.address, server.port, certificate=self.cfg.client.certificate,
                                        private_key=self.cfg.client.private_key,
                                        server_certificate=server.certificate,
                                        timeout=self.cfg.receive_timeout_seconds)
        except ssl.SSLError as exc:
            raise LunaCmError(f"The TLS handshake with {server.name} ({server.address}:{server.port}) failed "
                              f"({exc.reason or exc}): is this client's certificate registered and assigned a "
                              "partition there, and is the server certificate the appliance's current one?",
                              code="NTLS_HANDSHAKE_FAILED") from None
        except OSError as exc:
            raise LunaCmError(f"Cannot reach {server.name} at {server.address}:{server.port}: "
                              f"{exc.strerror or exc}.", code="DEVICE_UNREACHABLE") from None
        self._clients[server_name] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            try:
                client.finalize()
            except (Pkcs11Error, OSError):
                pass
            client.close()
        self._clients.clear()
        self._sessions.clear()
        self._logged_in.clear()

    def _slot(self, slot_id: int) -> client_config.Slot:
        if not 0 <= slot_id < len(self.cfg.slots):
            raise LunaCmError(f"There is no slot {slot_id}.", code="CKR_SLOT_ID_INVALID", value=c.CKR_SLOT_ID_INVALID)
        return self.cfg.slots[slot_id]

    def _serial(self, slot_id: int) -> str:
        slot = self._slot(slot_id)
        client = self._client(slot.server)
        try:
            partitions = client.list_partitions()
        except Pkcs11Error as exc:
            raise _error(exc) from None
        for p in partitions:
            if slot.partition in (p.serial,) or slot.partition.lower() == p.name.lower():
                return p.serial
        raise LunaCmError(f"Partition '{slot.partition}' of slot {slot_id} is not assigned to this client on "
                          f"{slot.server} (or does not exist there).", code="CKR_SLOT_ID_INVALID",
                          value=c.CKR_SLOT_ID_INVALID)

    def _session(self, slot_id: int) -> int:
        session = self._sessions.get(slot_id)
        if session is None:
            client = self._client(self._slot(slot_id).server)
            session = self._call(lambda: client.open_session(self._serial(slot_id)))
            self._sessions[slot_id] = session
        return session

    @staticmethod
    def _call(fn, messages: dict[int, str] | None = None):
        try:
            return fn()
        except Pkcs11Error as exc:
            raise _error(exc, messages) from None

    def _admin(self, slot_id: int, action: str, **arguments) -> dict:
        client = self._client(self._slot(slot_id).server)
        answer = self._call(lambda: client.admin(action, **arguments))
        if not answer.get("ok"):
            raise LunaCmError(answer.get("message") or answer.get("code"), code=answer.get("code", "ERROR"),
                              value=answer.get("rv"))
        return answer

    # ---- what the commands ask --------------------------------------------------------------
    def slots(self) -> list[SlotView]:
        views = []
        for i, slot in enumerate(self.cfg.slots):
            try:
                client = self._client(slot.server)
                serial = self._serial(i)
                info = client.get_token_info(serial)
                label = info["label"].decode().rstrip() if isinstance(info.get("label"), bytes) else info.get("label")
                flags = info.get("flags", 0)
                views.append(SlotView(slot_id=i, server=slot.server, partition=slot.partition, serial=serial,
                                      label=label if flags & c.CKF_TOKEN_INITIALIZED else None,
                                      initialized=bool(flags & c.CKF_TOKEN_INITIALIZED), reachable=True,
                                      model=client.server.model if client.server else None,
                                      firmware=client.server.firmware if client.server else None))
            except LunaCmError as exc:
                views.append(SlotView(slot_id=i, server=slot.server, partition=slot.partition, problem=exc.message))
            except Pkcs11Error as exc:
                views.append(SlotView(slot_id=i, server=slot.server, partition=slot.partition,
                                      problem=_error(exc).message))
        return views

    def partition_initialized(self, slot_id: int) -> bool:
        info = self._admin(slot_id, "partition.showinfo", partition=self._serial(slot_id))
        return bool(info.get("initialized"))

    def init_partition(self, slot_id: int, *, label: str, so_password: str, domain: str | None) -> None:
        serial = self._serial(slot_id)
        session = self._sessions.pop(slot_id, None)
        if session is not None:  # initialization needs this application's sessions there closed
            client = self._client(self._slot(slot_id).server)
            self._call(lambda: client.close_session(session))
        self._logged_in.pop(slot_id, None)
        arguments = {"partition": serial, "label": label, "so_pin": so_password}
        if domain is not None:
            arguments["domain"] = domain
        self._admin(slot_id, "partition.init", **arguments)

    def login(self, slot_id: int, role: str, password: str) -> None:
        client = self._client(self._slot(slot_id).server)
        session = self._session(slot_id)
        self._call(lambda: client.login(session, USER_TYPES[role], password.encode()))
        self._logged_in[slot_id] = role

    def logout(self, slot_id: int) -> None:
        client = self._client(self._slot(slot_id).server)
        session = self._session(slot_id)
        self._call(lambda: client.logout(session))
        self._logged_in.pop(slot_id, None)

    def must_change_password(self, slot_id: int, role: str) -> bool:
        status = self._admin(slot_id, "role.status", partition=self._serial(slot_id), role=role)
        return any(r.get("must_change") for r in status.get("roles", []))

    def init_role(self, slot_id: int, role: str, password: str) -> None:
        self._admin(slot_id, "role.init", session=self._session(slot_id), role=role, pin=password)

    def reset_password(self, slot_id: int, role: str, password: str) -> None:
        self._admin(slot_id, "role.resetpw", session=self._session(slot_id), role=role, pin=password)

    def change_password(self, slot_id: int, role: str, old: str, new: str) -> None:
        self._admin(slot_id, "role.changepw", session=self._session(slot_id), role=role, old_pin=old, new_pin=new)

    def partition_info(self, slot_id: int) -> dict:
        info = self._admin(slot_id, "partition.showinfo", partition=self._serial(slot_id))
        rows = {"Partition Serial Number": info.get("serial"), "Partition Name": info.get("name"),
                "Partition Label": info.get("label") or "(not initialized)",
                "Initialized": "yes" if info.get("initialized") else "no"}
        if "objects" in info:
            rows["Objects"] = info["objects"]
        cloning = self.cloning_info(slot_id)
        if cloning.initialized:
            rows["Cloning Domain ID"] = cloning.domain_id
        rows["Private Key Cloning (policy 0)"] = "allowed" if cloning.private_key_cloning else "not allowed"
        rows["Secret Key Cloning (policy 4)"] = "allowed" if cloning.secret_key_cloning else "not allowed"
        for r in info.get("roles", []):
            state = "locked" if r.get("locked") else ("initialized" if r.get("initialized") else "not initialized")
            if r.get("must_change"):
                state += ", must change password"
            rows[f"{r.get('name')} ({r.get('role')})"] = \
                f"{state}; failed logins {r.get('failed_logins', 0)} of {r.get('threshold', '-')}"
        return rows

    def policies(self, slot_id: int) -> list[dict]:
        answer = self._admin(slot_id, "partition.showpolicies", partition=self._serial(slot_id))
        return [{"code": p["code"], "name": p["name"], "value": p["value"],
                 "destructive": p.get("destructive") not in (None, "", "no", "never")}
                for p in answer.get("policies", [])]

    def change_policy(self, slot_id: int, code: int, value: int) -> None:
        self._admin(slot_id, "partition.changepolicy", session=self._session(slot_id), policy=code, value=value)

    def roles(self, slot_id: int) -> list[dict]:
        answer = self._admin(slot_id, "role.list", partition=self._serial(slot_id))
        return [{"name": f"{r.get('name')} ({r.get('role')})", "initialized": r.get("initialized"),
                 "mustChange": r.get("must_change"), "failedLogins": r.get("failed_logins"),
                 "locked": r.get("locked"), "permanent": r.get("locked") and r.get("permanent", False)}
                for r in answer.get("roles", [])]

    # ---- HA groups (lunacm hagroup) -----------------------------------------------------------
    def serial_of(self, slot_id: int) -> str:
        """The slot's partition serial (LIST_PARTITIONS): a LunaCmError when it cannot be reached."""
        return self._serial(slot_id)

    def logged_in_role(self, slot_id: int) -> str | None:
        return self._logged_in.get(slot_id)

    def save_config(self) -> None:
        client_config.save(self.cfg)

    # ---- cloning, backup, restore (docs/ntls-protocol.md, "Cloning, backup and synchronize") ---------
    def client_for(self, slot_id: int) -> NtlsClient:
        """The NTLS connection of a slot's appliance (HA groups and synchronize use it)."""
        return self._client(self._slot(slot_id).server)

    def session(self, slot_id: int) -> int:
        """This shell's session on the slot (its login is the shell's)."""
        return self._session(slot_id)

    def cloning_info(self, slot_id: int):
        client = self.client_for(slot_id)
        serial = self._serial(slot_id)
        return self._call(lambda: client.get_cloning_info(serial), CLONING_MESSAGES)

    def backup(self, slot_id: int) -> bytes:
        client, session = self.client_for(slot_id), self._session(slot_id)
        return self._call(lambda: client.backup(session), CLONING_MESSAGES)

    def restore(self, slot_id: int, data: bytes, *, replace: bool) -> tuple[int, int]:
        client, session = self.client_for(slot_id), self._session(slot_id)
        return self._call(lambda: client.restore(session, data, replace=replace), CLONING_MESSAGES)

    def object_fingerprints(self, slot_id: int) -> list:
        client, session = self.client_for(slot_id), self._session(slot_id)
        return self._call(lambda: client.list_object_fingerprints(session), CLONING_MESSAGES)

    def clone_objects(self, source_slot: int, target_slot: int, handles: list[int]) -> list[int]:
        """Clone token objects between two slots (the CO logged in on both)."""
        source, target = self.client_for(source_slot), self.client_for(target_slot)
        source_session, target_session = self._session(source_slot), self._session(target_slot)
        return self._call(lambda: clone_objects(source, source_session, target, target_session, handles),
                          CLONING_MESSAGES)
