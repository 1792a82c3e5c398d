"""The SIP plane: the endpoint, the router that dispatches its requests, the device adapter and
the whitelist admission actions. Entered after the store and the health recorder it reports to."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.base import HealthSink
from adapters.gb_device import DeviceSettings, GbDeviceAdapter
from adapters.outbound import LocalIdentity
from certs.errors import CertError
from certs.tls import server_context
from gateway.app.sip_sendbatch import SendBatch
from gateway.app.sip_shared import ObservedPresence, SharedFlood, SharedLockout
from gateway.app.sip_workers import SipWorkers
from gateway.app.status import alive
from gateway.app.store import StorePlane, node_secret
from gateway.config import Settings, worker_count
from gateway.errors import ConfigError
from gateway.gb.presence import Presence
from gateway.health.metrics import (
    MANSCDP_CMD_TYPES,
    MANSCDP_ROOTS,
    SIP_METHODS,
    SIP_STATUSES,
    CounterSource,
    Metrics,
)
from gateway.health.recorder import HealthRecorder
from gateway.sip import digest, reuseport
from gateway.sip.router import SipRouter
from gateway.sip.transport import SipEndpoint
from gateway.store.inventory import StoreInventory
from whitelist.admission import Admission
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential

log = logging.getLogger(__name__)

SIP_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "requests": ("gbgate_sip_requests_total", "SIP requests received, by method", ("method",)),
    "responses": ("gbgate_sip_responses_total", "SIP responses sent, by status", ("status",)),
    "refused": ("gbgate_refusals_total", "Requests refused, by reason", ("reason",)),
    "alarms": ("gbgate_security_alarms_total", "Security alarms raised, by kind", ("kind",)),
    "auth": ("gbgate_sip_auth_total", "Digest authentication outcomes", ("outcome",)),
    "manscdp": ("gbgate_manscdp_messages_total", "MANSCDP messages, by root and CmdType", ("root", "cmd")),
    "catalog": ("gbgate_catalog_syncs_total", "Catalog assemblies, by outcome", ("outcome",)),
}
#: Label values kept per family (the rest is `other`): those that come from the wire.
SIP_ALLOWED = {"requests": (SIP_METHODS,), "responses": (SIP_STATUSES,),
               "manscdp": (MANSCDP_ROOTS, MANSCDP_CMD_TYPES)}
ENDPOINT_ALLOWED = {"requests": (SIP_METHODS,), "responses": (SIP_STATUSES,)}
ENDPOINT_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "parse_error": ("gbgate_sip_parse_errors_total", "Malformed SIP input, by reason", ("reason",)),
    "requests": ("gbgate_sip_transport_requests_total", "SIP requests parsed, by method", ("method",)),
    "responses": ("gbgate_sip_transport_responses_total", "SIP responses parsed, by status", ("status",)),
    "tls_handshake_error": (
        "gbgate_sip_tls_handshake_failures_total", "TLS handshakes refused, by reason", ("reason",)
    ),
}


@dataclass(slots=True)
class SipPlane:
    router: SipRouter
    endpoint: SipEndpoint
    adapter: GbDeviceAdapter
    admission: Admission
    presence: Presence
    workers: SipWorkers | None = None  # sip.workers > 1

    def status(self) -> str:
        return alive(self.endpoint.serving)


def _device_settings(s: Settings) -> DeviceSettings:
    return DeviceSettings(
        realm=s.sip.domain,
        register_expires_max=s.sip.register_expires_max,
        register_expires_min=s.sip.register_expires_min,
        digest_algorithm=s.sip.digest_algorithm,
        query_timeout=s.sip.query_timeout,
        catalog_idle_timeout=s.sip.catalog_idle_timeout,
        catalog_first_timeout=s.sip.catalog_first_timeout,
        sync_concurrency=s.sip.sync_concurrency,
        query_on_register=s.sip.query_on_register,
    )


def _shared_credential(realm: str, password: str) -> Callable[[str], Credential]:
    """`sip.default_password`: one password for every device without its own credential."""
    return lambda device_id: Credential.from_password(device_id, realm, password)


@asynccontextmanager
async def sip_plane(settings: Settings, store: StorePlane, health: HealthRecorder, metrics: Metrics,
                    clock: Callable[[], float], *, ledger: HealthSink | None = None,
                    inventory: StoreInventory | None = None) -> AsyncIterator[SipPlane]:
    """Bind the endpoint, install the device adapter on the router, start admission; on exit stop
    them in reverse (admission, adapter, endpoint). `ledger`/`inventory` replace the adapter's
    health sink and store view (the cascade's change taps, gateway/app/cascade.py)."""
    s = settings
    n_workers = worker_count(s.sip.workers)
    shared = n_workers > 1  # the guards tell the workers what they count (gateway/app/sip_shared.py)
    presence = (ObservedPresence if shared else Presence)(
        keepalive_interval=s.sip.keepalive_interval, keepalive_count=s.sip.keepalive_timeout_count)
    identity = LocalIdentity(
        sip_id=s.sip.id, domain=s.sip.domain, host=s.sip.host, port=s.sip.port, user_agent=s.sip.user_agent
    )
    admission = Admission(store.whitelist, store.policy, realm=s.sip.domain, clock=clock)
    tls_context = None
    if s.sip.tls_port is not None:
        try:
            tls_context = server_context(s.sip.tls_cert, s.sip.tls_key, s.sip.tls_ca, s.sip.tls_require_client_cert)
        except CertError as exc:
            raise ConfigError("sip.tls_cert", f"cannot load the TLS certificate/key/CA: {exc}") from None
    router = SipRouter()
    endpoint = await SipEndpoint.start(
        s.sip.host, s.sip.port, router, rcvbuf=s.sip.rcvbuf, max_message=s.sip.max_message,
        tls_port=s.sip.tls_port, tls_context=tls_context, reuseport=shared,
    )
    try:
        if shared and endpoint.udp_socket is not None:
            try:
                reuseport.attach(endpoint.udp_socket, n_workers)
            except OSError as exc:  # then the kernel's own hash, main included: still correct
                log.warning("cannot steer SIP datagrams to the workers only: %s", exc)
        router.bind(endpoint)
        if not shared and endpoint.udp_socket is not None and endpoint.udp_transport is not None:
            # a loop pass's answers leave in one sendmmsg, as a SIP worker's do (sip_sendbatch.py)
            endpoint.udp_sendto = SendBatch(endpoint.udp_socket, endpoint.udp_transport,
                                            endpoint.count_send_error).sendto
        identity.port = endpoint.udp_port
        password = s.sip.default_password
        default_credential = _shared_credential(s.sip.domain, password) if password else None
        adapter = GbDeviceAdapter(
            settings=_device_settings(s),
            identity=identity,
            endpoint=endpoint,
            policy=store.policy,
            lockout=(SharedLockout if shared else Lockout)(
                max_failures=s.whitelist.max_failures, window=s.whitelist.failure_window,
                lock_for=s.whitelist.lock_for, source_distinct_ids=s.whitelist.source_distinct_ids,
                source_max_failures=s.whitelist.source_max_failures,
            ),
            flood=(SharedFlood if shared else FloodGuard)(
                max_per_second=s.whitelist.flood_max_per_second, ban_for=s.whitelist.flood_ban_for),
            presence=presence,
            nonces=digest.NonceIssuer(node_secret(Path(s.data_dir)), ttl=s.sip.nonce_ttl),
            inventory=inventory if inventory is not None else StoreInventory(store.repo),
            health=ledger if ledger is not None else health,
            whitelist_actions=admission,
            clock=clock,
            default_credential=default_credential,
        )
        adapter.install(router)
        endpoint.fast_path = router.on_fast  # plain keepalives and challenges (gateway/sip/fastpath.py)
        endpoint.fast_credentials = True  # and REGISTERs with credentials (GbDeviceAdapter.fast_admit)
        admission.on_drop.append(adapter.drop_device)
        await adapter.start()
        try:
            await admission.start()
            try:
                metrics.add_counters(CounterSource(lambda: adapter.stats + router.stats, SIP_FAMILIES, SIP_ALLOWED))
                metrics.add_counters(CounterSource(lambda: endpoint.stats, ENDPOINT_FAMILIES, ENDPOINT_ALLOWED))
                metrics.add_gauge("gbgate_devices_registered", "Devices with a live registration",
                                  lambda: len(presence))
                metrics.add_gauge("gbgate_devices_online", "Devices online now", lambda: presence.online_count())
                workers = None
                if shared:
                    assert isinstance(presence, ObservedPresence)
                    assert isinstance(adapter.lockout, SharedLockout) and isinstance(adapter.flood, SharedFlood)
                    workers = SipWorkers(s, n_workers, adapter=adapter, endpoint=endpoint, presence=presence,
                                         lockout=adapter.lockout, flood=adapter.flood, admission=admission, clock=clock)
                    await workers.start()
                try:
                    yield SipPlane(router, endpoint, adapter, admission, presence, workers)
                finally:
                    if workers is not None:
                        await workers.stop()
            finally:
                await admission.stop()
        finally:
            await adapter.stop()
    finally:
        await endpoint.stop()
