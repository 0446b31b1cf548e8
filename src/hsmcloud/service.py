"""Wires one service instance together: store, identity, network, control plane, device host."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from hsmcloud.config import Settings
from hsmcloud.controlplane.credentials import TenantCredentials
from hsmcloud.controlplane.hsms import HsmService
from hsmcloud.controlplane.lifecycle import Lifecycle
from hsmcloud.controlplane.operations import release_all_leases
from hsmcloud.fleet.device_host import DeviceHost
from hsmcloud.fleet.inventory import seed_fleet
from hsmcloud.identity.initial_secrets import InitialSecrets
from hsmcloud.identity.tokens import TokenAuthority
from hsmcloud.network.service import NetworkService
from hsmcloud.private_files import private_dir
from hsmcloud.store.db import Store


@dataclass(kw_only=True)
class Services:
    settings: Settings
    store: Store
    tokens: TokenAuthority
    network: NetworkService
    hsms: HsmService
    host: DeviceHost
    lifecycle: Lifecycle
    credentials: TenantCredentials


def build_services(settings: Settings) -> Services:
    # It holds keys, tokens and device states: only the service's user may read it, even when the
    # user made it beforehand (with whatever umask).
    private_dir(settings.state_dir)
    private_dir(settings.devices_dir)
    store = Store(settings.resolved_database_url)
    for attempt in range(3):
        try:
            with store.session() as s:
                seed_fleet(s, settings.regions, share_single_loopback=settings.loopback_share_single)
                if store.is_sqlite:
                    release_all_leases(s)  # SQLite means one replica: every lease belongs to a dead process
            break
        except IntegrityError:
            if attempt == 2:  # another replica seeding the same fleet at the same moment
                raise
    network = NetworkService(settings)
    host = DeviceHost(settings.devices_dir)
    hsms = HsmService(settings, network)
    initial_secrets = InitialSecrets(settings.state_dir)
    return Services(settings=settings, store=store, tokens=TokenAuthority(settings.state_dir), network=network,
                    hsms=hsms, host=host,
                    lifecycle=Lifecycle(store=store, settings=settings, host=host, network=network,
                                        initial_secrets=initial_secrets),
                    credentials=TenantCredentials(store=store, hsms=hsms, initial_secrets=initial_secrets))
