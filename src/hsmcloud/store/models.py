"""Tables of the control plane's one store (SQLite embedded, PostgreSQL in production).

Key material never lives here: each appliance keeps its own state. This store holds the
provider's view: subscriptions, resources, the fleet and long-running operations.
"""
from __future__ import annotations

from datetime import datetime

from datetime import timezone

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    allowlisted: Mapped[bool] = mapped_column(Boolean, default=False)
    allowlisted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Quota(Base):
    """A subscription's HSM quota in one region; absent rows mean the initial quota."""

    __tablename__ = "quotas"
    subscription_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    per_region: Mapped[int] = mapped_column(Integer)
    per_stamp: Mapped[int] = mapped_column(Integer)


class QuotaRequest(Base):
    __tablename__ = "quota_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    region: Mapped[str] = mapped_column(String(64))
    per_region: Mapped[int] = mapped_column(Integer)
    per_stamp: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="Pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ResourceGroup(Base):
    __tablename__ = "resource_groups"
    __table_args__ = (UniqueConstraint("subscription_id", "name_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(90))
    name_key: Mapped[str] = mapped_column(String(90))
    location: Mapped[str] = mapped_column(String(64))
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="Succeeded")  # Succeeded | Deleting
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VirtualNetwork(Base):
    __tablename__ = "virtual_networks"
    __table_args__ = (UniqueConstraint("subscription_id", "rg_key", "name_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    rg_key: Mapped[str] = mapped_column(String(90))
    name: Mapped[str] = mapped_column(String(80))
    name_key: Mapped[str] = mapped_column(String(80))
    location: Mapped[str] = mapped_column(String(64))
    address_prefixes: Mapped[list] = mapped_column(JSON, default=list)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Subnet(Base):
    __tablename__ = "subnets"
    __table_args__ = (UniqueConstraint("vnet_id", "name_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vnet_id: Mapped[int] = mapped_column(ForeignKey("virtual_networks.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    name_key: Mapped[str] = mapped_column(String(80))
    address_prefix: Mapped[str] = mapped_column(String(64))
    delegations: Mapped[list] = mapped_column(JSON, default=list)  # [{"name", "serviceName"}]


class VirtualNetworkGateway(Base):
    __tablename__ = "virtual_network_gateways"
    __table_args__ = (UniqueConstraint("subscription_id", "rg_key", "name_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    rg_key: Mapped[str] = mapped_column(String(90))
    name: Mapped[str] = mapped_column(String(80))
    name_key: Mapped[str] = mapped_column(String(80))
    location: Mapped[str] = mapped_column(String(64))
    vnet_id: Mapped[int] = mapped_column(ForeignKey("virtual_networks.id", ondelete="CASCADE"), unique=True)
    gateway_type: Mapped[str] = mapped_column(String(32))
    sku: Mapped[dict] = mapped_column(JSON, default=dict)
    ip_configurations: Mapped[list] = mapped_column(JSON, default=list)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The gateway is "Updating" until this instant, then "Succeeded": state from a timestamp.
    ready_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NetworkInterface(Base):
    __tablename__ = "network_interfaces"
    __table_args__ = (UniqueConstraint("subscription_id", "rg_key", "name_key"),
                      UniqueConstraint("subnet_id", "private_ip"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    rg_key: Mapped[str] = mapped_column(String(90))
    rg_name: Mapped[str] = mapped_column(String(90))
    name: Mapped[str] = mapped_column(String(120))
    name_key: Mapped[str] = mapped_column(String(120))
    location: Mapped[str] = mapped_column(String(64))
    subnet_id: Mapped[int] = mapped_column(ForeignKey("subnets.id"), index=True)
    private_ip: Mapped[str] = mapped_column(String(45))
    allocation_method: Mapped[str] = mapped_column(String(16), default="Dynamic")
    hsm_id: Mapped[str | None] = mapped_column(ForeignKey("dedicated_hsms.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Stamp(Base):
    __tablename__ = "stamps"
    __table_args__ = (UniqueConstraint("region", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(32))  # stamp1, stamp2
    index: Mapped[int] = mapped_column(Integer)


class Device(Base):
    """One physical (emulated) appliance in a stamp."""

    __tablename__ = "devices"
    serial: Mapped[str] = mapped_column(String(32), primary_key=True)
    stamp_id: Mapped[int] = mapped_column(ForeignKey("stamps.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # luna | payshield
    role: Mapped[str] = mapped_column(String(16))  # customer | spare | test
    state: Mapped[str] = mapped_column(String(16), default="free")  # free|allocated|reclaiming|failed|maintenance
    hsm_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    loopback_address: Mapped[str] = mapped_column(String(45))
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    # General-purpose devices: NTLS (mutual TLS for PKCS#11 clients), 1792 on the real appliance.
    ntls_port: Mapped[int | None] = mapped_column(Integer)
    mgmt_port: Mapped[int | None] = mapped_column(Integer)
    host1_port: Mapped[int | None] = mapped_column(Integer)
    host2_port: Mapped[int | None] = mapped_column(Integer)
    mgmt_token: Mapped[str] = mapped_column(String(128))
    # When the tenant claimed its credential for a payment device's management interface. The
    # credential itself is the tenant's alone: neither it nor a hash of it is kept here.
    tenant_credential_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_checked_pristine_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DedicatedHsm(Base):
    """A Microsoft.HardwareSecurityModules/dedicatedHSMs resource (general purpose or payment)."""

    __tablename__ = "dedicated_hsms"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # "sub/rg/name" lowercased while the resource exists; NULL once deleted (kept for billing).
    live_key: Mapped[str | None] = mapped_column(String(256), unique=True)
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    rg_name: Mapped[str] = mapped_column(String(90))
    rg_key: Mapped[str] = mapped_column(String(90))
    name: Mapped[str] = mapped_column(String(24))
    location: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str] = mapped_column(String(64))
    zones: Mapped[list | None] = mapped_column(JSON)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    requested_stamp: Mapped[str | None] = mapped_column(String(32))
    stamp_id: Mapped[int | None] = mapped_column(ForeignKey("stamps.id"))
    network_profile: Mapped[dict] = mapped_column(JSON, default=dict)  # {"subnet_id", "ips": [...]}
    management_network_profile: Mapped[dict | None] = mapped_column(JSON)
    provisioning_state: Mapped[str] = mapped_column(String(16))
    status_message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[dict | None] = mapped_column(JSON)
    device_serial: Mapped[str | None] = mapped_column(String(32))
    orphaned: Mapped[bool] = mapped_column(Boolean, default=False)
    force_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime())
    modified_by: Mapped[str] = mapped_column(String(128))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Billing runs from the hand-over of a device (Succeeded) until deletion; orphans keep running.
    billing_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Operation(Base):
    """A long-running operation: re-entrant steps recorded here and resumed after a crash."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # hsm.create|hsm.delete|group.delete|device.licence|device.firmware
    subscription_id: Mapped[str] = mapped_column(String(36), index=True)
    location: Mapped[str] = mapped_column(String(64))
    # An HSM's id, or a device's serial for the provider's device operations.
    target: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="InProgress")  # InProgress|Succeeded|Failed
    step: Mapped[str] = mapped_column(String(32))
    error: Mapped[dict | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Raised by every claim: a worker writes a step's result only while the row still has the epoch
    # (and owner) it claimed with, so a worker whose lease was taken over cannot write (fencing).
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What was asked (e.g. a firmware version) and what came of it (e.g. the device's answer).
    params: Mapped[dict | None] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Event(Base):
    """Service audit log: operator actions, lifecycle steps, device checks."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class ServicePrincipal(Base):
    """An application identity of the token endpoint: acts on one subscription, or as an operator.

    The client secret is kept only as a scrypt hash; a certificate credential keeps only the
    public certificate (the private key stays with whoever created it)."""

    __tablename__ = "service_principals"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # object id (the tokens' oid)
    app_id: Mapped[str] = mapped_column(String(36), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))  # tenant | operator
    subscription_id: Mapped[str | None] = mapped_column(String(36), index=True)
    secret_hash: Mapped[str | None] = mapped_column(String(200))
    cert_sha1: Mapped[str | None] = mapped_column(String(40))
    cert_sha256: Mapped[str | None] = mapped_column(String(64))
    cert_pem: Mapped[str | None] = mapped_column(Text)
    # The credential stops working after this instant (a secret's end date, a certificate's notAfter).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
