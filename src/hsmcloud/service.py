"""Wires one service instance together: store, identity, network, control plane, device host."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from hsmcloud.config import Settings
from hsmcloud.controlplane.credentials import TenantCredentials
from hsmcloud.controlplane.hsms import HsmService
from hsmcloud.controlplane.lifecycle import Lifecycle
from hsmcloud.controlplane.operations import release_leases_of_dead_local_workers
from hsmcloud.fleet.device_host import DeviceHost
from hsmcloud.fleet.inventory import seed_fleet
from hsmcloud.identity import directory
from hsmcloud.identity.initial_secrets import InitialSecrets
from hsmcloud.identity.service_principals import ServicePrincipals
from hsmcloud.identity.token_endpoint import TokenEndpoint
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
    principals: ServicePrincipals
    token_endpoint: TokenEndpoint


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
                # A crashed worker of this machine resumes at once; other machines' leases expire.
                release_leases_of_dead_local_workers(
                    s, own_id=settings.worker_id if settings.run_worker else None)
            break
        except IntegrityError:
            if attempt == 2:  # another replica seeding the same fleet at the same moment
                raise
    network = NetworkService(settings)
    host = DeviceHost(settings.devices_dir)
    hsms = HsmService(settings, network)
    initial_secrets = InitialSecrets(settings.state_dir)
    tokens = TokenAuthority(settings.state_dir)
    tenant_id = directory.tenant_id(settings.state_dir)
    principals = ServicePrincipals(store=store, tenant_id=tenant_id)
    return Services(settings=settings, store=store, tokens=tokens, network=network, hsms=hsms, host=host,
                    principals=principals,
                    token_endpoint=TokenEndpoint(tenant_id=tenant_id, tokens=tokens, principals=principals),
                    lifecycle=Lifecycle(store=store, settings=settings, host=host, network=network,
                                        initial_secrets=initial_secrets),
                    credentials=TenantCredentials(store=store, hsms=hsms, initial_secrets=initial_secrets))
