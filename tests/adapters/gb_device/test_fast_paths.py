"""The device adapter's fast paths (keepalive 200, REGISTER challenge, plain refresh 200) against
its full path.

Two adapters get the same generated sequence of requests: one always through the full path
(parse → transaction → router → on_register/on_message → make_response → transaction), the other
offered to the fast path first, as the endpoint does (falling back when it declines). After each
request both must have sent the same bytes (the challenge's random nonce aside) and be in the same
state: presence, counters, inventory and health calls, audit records. A declined request must
have changed nothing. Devices: registered and approved, registered but revoked, approved but not
registered, unknown; sources: the bound address, another port, another host; bodies: plain
keepalives, foreign DeviceIDs, other MANSCDP, none; REGISTERs without credentials, with garbage
ones, and with good or wrong digests on nonces issued for any of the sources (with the binding's
Call-ID or another, so refreshes, new logins, replays and moves all occur); a flood guard that trips.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.gb_device import DeviceSettings, GbDeviceAdapter
from adapters.outbound import LocalIdentity
from gateway.gb import builders
from gateway.gb.presence import Presence
from gateway.sip import digest, fastpath
from gateway.sip.errors import SipTimeout
from gateway.sip.events import Peer, RequestReceived, Send
from gateway.sip.message import parse_message
from gateway.sip.router import SipRouter
from gateway.sip.transaction import TransactionLayer
from tests.adapters.test_gb_device_fuzz import Audit, Health, Inventory
from whitelist.decide import Policy
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
A, REVOKED, FRESH, LIMITED, UNKNOWN = (f"3402000000132000{n:04d}" for n in (1, 2, 3, 4, 5))
BOUND = Peer("udp", "192.0.2.1", 5060, None)
PEERS = [BOUND, Peer("udp", "192.0.2.1", 5070, None), Peer("udp", "198.51.100.9", 5060, None)]


class TxEndpoint:
    """respond() as SipEndpoint does it: through a TransactionLayer; the bytes are recorded."""

    def __init__(self, clock: list[float]) -> None:
        self.tl = TransactionLayer()
        self.sent: list[bytes] = []
        self.clock = clock

    def respond(self, key: Any, response: Any, stateless: bool = False) -> None:
        for ev in self.tl.respond(key, response, self.clock[0], stateless=stateless):
            assert isinstance(ev, Send)
            self.sent.append(ev.data)

    def respond_raw(self, key: Any, data: bytes, status: int) -> None:
        for ev in self.tl.answer(key, data, self.clock[0]):
            assert isinstance(ev, Send)
            self.sent.append(ev.data)

    async def request(self, req: Any, peer: Any, timeout: float = 1.0) -> Any:
        raise SipTimeout("no device behind")

    def peer_fingerprint(self, peer: Any) -> None:
        return None


@dataclasses.dataclass
class Rig:
    adapter: GbDeviceAdapter
    router: SipRouter
    endpoint: TxEndpoint
    inventory: Inventory
    health: Health
    clock: list[float]


def make_rig(flood_rate: float) -> Rig:
    def entry(device_id: str, status: EntryStatus, **kw: Any) -> Entry:
        return Entry(device_id=device_id, status=status, credential=Credential.from_password(device_id, REALM, "p"),
                     **kw)

    entries = [entry(A, EntryStatus.APPROVED), entry(REVOKED, EntryStatus.REVOKED), entry(FRESH, EntryStatus.APPROVED),
               entry(LIMITED, EntryStatus.APPROVED, allowed_sources=(ipaddress.ip_network("198.51.100.0/24"),))]
    clock = [1000.0]
    inventory, health, endpoint, router = Inventory(), Health(), TxEndpoint(clock), SipRouter()
    router.bind(endpoint)
    adapter = GbDeviceAdapter(
        settings=DeviceSettings(realm=REALM, query_on_register=False),
        identity=LocalIdentity(sip_id="34020000002000000001", domain=REALM, host="127.0.0.1", port=5060,
                               user_agent="t"),
        endpoint=endpoint,  # type: ignore[arg-type]
        policy=Policy(entries), lockout=Lockout(), flood=FloodGuard(max_per_second=flood_rate, ban_for=2.0),
        presence=Presence(), nonces=digest.NonceIssuer(b"k" * 32), inventory=inventory, health=health,
        whitelist_actions=Audit(), clock=lambda: clock[0],
    )
    adapter.install(router)
    for dev in (A, REVOKED, LIMITED):
        adapter.presence.register(dev, transport="udp", host=BOUND.host, port=BOUND.port, conn_id=None,
                                  call_id=f"reg-{dev}", contact="", expires=3600, now=1000.0)
    return Rig(adapter, router, endpoint, inventory, health, clock)


def guards(adapter: GbDeviceAdapter) -> dict[str, Any]:
    """What the registrar's guards remember: failures and locks per ID and per source, the
    (nonce, nc) pairs accepted (a refresh's effects reach all three)."""
    lock = adapter.lockout
    return {name: ({k: (f.times, f.ids) for k, f in c._fails.items()}, dict(c._locks))
            for name, c in (("ids", lock._ids), ("sources", lock._sources))} | {
        "replays": dict(adapter.replays._seen)}


def state(rig: Rig) -> dict[str, Any]:
    return {
        "guards": guards(rig.adapter),
        "presence": sorted((r.device_id, dataclasses.asdict(r)) for r in rig.adapter.presence.records()),
        "stats": dict(rig.adapter.stats), "router": dict(rig.router.stats),
        "inventory": list(rig.inventory.touched), "health": list(rig.health.calls),
        "audit": list(rig.adapter.whitelist_actions.records),
    }


_NONCE = re.compile(rb'nonce="[0-9a-f]+"')
_ISSUER = digest.NonceIssuer(b"k" * 32)  # the rigs' node secret: its nonces are valid in both
_TO_TAG = re.compile(rb"(\r\nTo: [^\r]*;tag=)[0-9a-f]+")


def unnonced(data: bytes | None, *, stateful: bool) -> bytes | None:
    """Without the random parts: a challenge's nonce, and the To tag of an answer both rigs gave
    through the full path (random when stateful); fast answers' tags depend on the request only
    and are compared."""
    if data is None:
        return None
    data = _NONCE.sub(b'nonce="-"', data)
    return _TO_TAG.sub(rb"\1-", data) if stateful else data


def full_path(rig: Rig, data: bytes, peer: Peer) -> bytes | None:
    sent = len(rig.endpoint.sent)
    for ev in rig.endpoint.tl.receive(parse_message(data), peer, rig.clock[0]):
        if isinstance(ev, RequestReceived):
            rig.router.on_request(ev.request, ev.peer, ev.key)
        elif isinstance(ev, Send):
            rig.endpoint.sent.append(ev.data)  # a retransmission absorbed: the last answer again
    return rig.endpoint.sent[-1] if len(rig.endpoint.sent) > sent else None


def endpoint_path(rig: Rig, data: bytes, peer: Peer) -> tuple[bool, bool, bytes | None]:
    """SipEndpoint._on_bytes with `fast_credentials` as gateway/app/sip.py sets it: the fast path
    first (unless a transaction holds the request), else the full path. Returns (taken by the
    fast path, its answer kept for Timer J, bytes sent)."""
    s = fastpath.scan(data, credentials=True)
    if s is not None and s.server_key not in rig.endpoint.tl:
        before = state(rig)
        answer = rig.router.on_fast(s, peer)
        if answer is not None:
            if answer.status is None:  # ignored, or a login's 200 to come: the endpoint holds the transaction
                rig.endpoint.tl.hold(s.server_key, peer, rig.clock[0])
                return True, False, None
            if answer.keep:
                rig.endpoint.tl.answered(s.server_key, peer, answer.data, rig.clock[0])
            rig.endpoint.sent.append(answer.data)
            return True, answer.keep, answer.data
        assert state(rig) == before, "a declined fast path changed state"
    return False, False, full_path(rig, data, peer)


def plain_refresh(device: str, peer: Peer, *, branch: str, nc: int) -> bytes:
    """sipp's reg_auth.xml second REGISTER for the binding the rig made: a plain refresh when
    `device` is bound at `peer` and admitted there."""
    nonce = _ISSUER.issue(1000.0, f"{peer.transport}:{peer.host}:{peer.port}")
    auth = digest.authorization(digest.challenge(REALM, nonce, qop=True), method="REGISTER",
                                uri=f"sip:34020000002000000001@{REALM}", username=device, password="p", nc=nc,
                                cnonce="cn")
    return ("\r\n".join([
        f"REGISTER sip:34020000002000000001@{REALM} SIP/2.0",
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};rport;branch={branch}", "Max-Forwards: 70",
        f"From: <sip:{device}@{REALM}>;tag=t{branch}", f"To: <sip:{device}@{REALM}>", f"Call-ID: reg-{device}",
        "CSeq: 2 REGISTER", f"Contact: <sip:{device}@{peer.host}:{peer.port}>", f"Authorization: {auth}",
        "Expires: 3600", "User-Agent: sipp-gb28181-ipc", "Content-Length: 0", "", ""])).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, Peer, float]:
    if draw(st.integers(0, 5)) == 0:  # the storm's request: mostly the plain refresh, near misses beside it
        device = draw(st.sampled_from([A, A, A, REVOKED, LIMITED]))
        peer = draw(st.sampled_from([BOUND, BOUND, BOUND, *PEERS]))
        return (plain_refresh(device, peer, branch=f"z9hG4bKr{draw(st.integers(0, 3))}", nc=draw(st.integers(1, 2))),
                peer, draw(st.sampled_from([0.0, 0.01, 0.5, 3.0])))
    device = draw(st.sampled_from([A, A, A, A, REVOKED, FRESH, LIMITED, UNKNOWN, "notanid"]))
    peer = draw(st.sampled_from([BOUND, BOUND, BOUND, *PEERS]))
    branch = f"z9hG4bK{draw(st.integers(0, 3))}"  # repeats: retransmissions meet live transactions
    method = draw(st.sampled_from(["MESSAGE", "MESSAGE", "REGISTER"]))
    head = [f"{method} sip:34020000002000000001@{REALM} SIP/2.0",
            f"Via: SIP/2.0/UDP {peer.host}:{peer.port};rport;branch={branch}",
            f"From: <sip:{device}@{REALM}>;tag=t{draw(st.integers(0, 2))}",
            f"To: <sip:{device if method == 'REGISTER' else '34020000002000000001'}@{REALM}>",
            f"Call-ID: c{draw(st.integers(0, 2))}@x", f"CSeq: {draw(st.integers(1, 3))} {method}",
            "Max-Forwards: 70"]
    body = b""
    if method == "MESSAGE":
        kind = draw(st.sampled_from(["keepalive", "keepalive", "keepalive", "foreign", "alarm", "none"]))
        if kind == "keepalive":
            body = builders.build_keepalive(device, draw(st.integers(1, 99)))
        elif kind == "foreign":
            body = builders.build_keepalive(draw(st.sampled_from([A, FRESH, UNKNOWN])), 1)
        elif kind == "alarm":
            body = builders.build_message("Notify", "Alarm", 1, device, fields={"AlarmPriority": "1"})
        head.append(draw(st.sampled_from(["Content-Type: Application/MANSCDP+xml"] * 3 + ["Content-Type: text/plain"])))
    else:
        head.append(f"Contact: <sip:{device}@{peer.host}:{peer.port}>")
        expires = draw(st.sampled_from(["Expires: 3600", "Expires: 0", "Expires: x", None]))
        if expires:
            head.append(expires)
        auth = draw(st.sampled_from([None, "garbage", "good", "good", "good", "wrong"]))
        if auth == "garbage":
            head.append(f'Authorization: Digest username="{device}", realm="{REALM}", nonce="00", '
                        f'uri="sip:34020000002000000001@{REALM}", response="00"')
        elif auth is not None:
            # a nonce both rigs accept (same node secret), issued for this source or another
            source = draw(st.sampled_from([peer, peer, *PEERS]))
            nonce = _ISSUER.issue(1000.0, f"{source.transport}:{source.host}:{source.port}")
            head.append("Authorization: " + digest.authorization(
                digest.challenge(REALM, nonce, qop=True), method="REGISTER", uri=f"sip:34020000002000000001@{REALM}",
                username=device, password="p" if auth == "good" else "wrong", nc=draw(st.integers(1, 2)),
                cnonce="cn"))
            if draw(st.booleans()):  # the binding's Call-ID: a refresh when from the bound address
                head[4] = f"Call-ID: reg-{device}"
    head.append(f"Content-Length: {len(body)}")
    dt = draw(st.sampled_from([0.0, 0.0, 0.01, 0.5, 3.0]))
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body, peer, dt


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=16), st.sampled_from([1e9, 2.0]))
def test_fast_path_answers_and_changes_exactly_what_the_full_path_does(
        sends: list[tuple[bytes, Peer, float]], flood_rate: float) -> None:
    async def run() -> None:
        full, fast = make_rig(flood_rate), make_rig(flood_rate)
        for data, peer, dt in sends:
            full.clock[0] += dt
            fast.clock[0] += dt
            expected = full_path(full, data, peer)
            taken, kept, got = endpoint_path(fast, data, peer)
            for rig in (full, fast):  # the endpoint's timer: stateless answers end their transaction
                rig.endpoint.tl.handle_timer(rig.clock[0])
            # both sides went through the full path when the fast one declined, or the fast one kept
            # a refresh's 200: random tags differ
            stateful = kept or not taken
            assert unnonced(got, stateful=stateful) == unnonced(expected, stateful=stateful)
            await asyncio.sleep(0)  # a login's 200 (its task) and the alarms' audit tasks
            assert state(fast) == state(full)
            assert [unnonced(d, stateful=True) for d in fast.endpoint.sent] == [
                unnonced(d, stateful=True) for d in full.endpoint.sent]
        for rig in (full, fast):
            await rig.adapter._tasks.close()

    asyncio.run(run())


def test_the_common_cases_take_the_fast_path() -> None:
    """A plain keepalive from the bound address and a first REGISTER are answered fast; the 401's
    nonce is one the registrar accepts from that address."""
    rig = make_rig(1e9)
    ka = (f"MESSAGE sip:34020000002000000001@{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKk"
          f"\r\nFrom: <sip:{A}@{REALM}>;tag=1\r\nTo: <sip:34020000002000000001@{REALM}>\r\nCall-ID: k@x\r\n"
          f"CSeq: 2 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\n").encode()
    body = builders.build_keepalive(A, 5)
    taken, _kept, sent = endpoint_path(rig, ka + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, BOUND)
    assert taken and sent is not None and sent.startswith(b"SIP/2.0 200 OK\r\n")
    assert rig.adapter.presence.get(A).last_keepalive == 1000.0  # type: ignore[union-attr]
    reg = (f"REGISTER sip:34020000002000000001@{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr\r\n"
           f"From: <sip:{FRESH}@{REALM}>;tag=1\r\nTo: <sip:{FRESH}@{REALM}>\r\nCall-ID: r@x\r\nCSeq: 1 REGISTER\r\n"
           f"Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
    taken, _kept, sent = endpoint_path(rig, reg, BOUND)
    assert taken and sent is not None and sent.startswith(b"SIP/2.0 401 Unauthorized\r\n")
    nonce = re.search(rb'nonce="([0-9a-f]+)"', sent).group(1).decode()  # type: ignore[union-attr]
    assert rig.adapter.nonces.check(nonce, 1000.0, "udp:192.0.2.1:5060") is digest.NonceState.VALID


async def test_refreshes_replays_and_wrong_passwords_end_as_on_the_full_path() -> None:
    """A storm's story for the bound device, through both rigs: wrong passwords (the full path's
    403s), the plain refresh that clears them (fast, kept), its retransmission (the same bytes from
    the transaction), the next nc (fast), the first Authorization played back on a new branch (the
    full path's 401 and replay alarm), and wrong passwords up to the lockout, after which even the
    good refresh is refused (403) as the full path refuses it."""
    full, fast = make_rig(1e9), make_rig(1e9)
    wrong = [plain_refresh(A, BOUND, branch=f"z9hG4bKw{k}", nc=1).replace(b"Call-ID: reg-", b"Call-ID: x-")
             for k in range(8)]
    for k, data in enumerate(wrong):  # good digests for another Call-ID would be logins: break the password
        wrong[k] = re.sub(rb'response="[0-9a-f]+"', b'response="' + b"0" * 32 + b'"', data)
    first = plain_refresh(A, BOUND, branch="z9hG4bKr1", nc=1)
    nonce = re.search(rb'nonce="([0-9a-f]+)"', first).group(1).decode()  # type: ignore[union-attr]
    auth = digest.authorization(digest.challenge(REALM, nonce, qop=True), method="REGISTER",
                                uri=f"sip:34020000002000000001@{REALM}", username=A, password="p", nc=2, cnonce="cn")
    second = re.sub(rb"Authorization: [^\r]*", b"Authorization: " + auth.encode(), first).replace(b"r1", b"r2")
    replayed = first.replace(b"z9hG4bKr1", b"z9hG4bKr3")
    story = [(wrong[0], "403", False), (wrong[1], "403", False), (first, "200", True), (first, "200", False),
             (second, "200", True), (replayed, "401", False)]
    story += [(w, "403", False) for w in wrong[2:]]
    story += [(plain_refresh(A, BOUND, branch="z9hG4bKr4", nc=1), "403", False)]
    for data, status, taken_fast in story:
        for rig in (full, fast):
            rig.clock[0] += 0.1
        expected = full_path(full, data, BOUND)
        taken, kept, got = endpoint_path(fast, data, BOUND)
        assert got is not None and got.split(b" ")[1] == status.encode(), (status, got)
        assert taken == taken_fast and kept == taken_fast
        stateful = kept or not taken
        assert unnonced(got, stateful=stateful) == unnonced(expected, stateful=stateful)
        await asyncio.sleep(0)  # the alarms' audit tasks
        assert state(fast) == state(full)
    for rig in (full, fast):
        await rig.adapter._tasks.close()
    assert fast.adapter.stats["auth:replay"] == 1 and fast.adapter.lockout.is_locked(A, BOUND.host, full.clock[0])


class DurableHealth(Health):
    """The health recorder's shape in the node: each new state is journaled, and set_state hands
    back the journal's barrier, a future resolved once it is fsynced."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier: asyncio.Future[None] | None = None

    def set_state(self, subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> Any:
        super().set_state(subject, state, cause, ts, evidence)
        if self.barrier is None:
            self.barrier = asyncio.get_running_loop().create_future()
        return self.barrier


def login(device: str, peer: Peer, *, call_id: str, branch: str) -> bytes:
    """A device's first authenticated REGISTER from `peer`, sipp's shape: a new login."""
    return plain_refresh(device, peer, branch=branch, nc=1).replace(f"Call-ID: reg-{device}".encode(),
                                                                      f"Call-ID: {call_id}".encode())


async def test_a_login_from_the_scan_is_answered_once_its_online_event_is_durable() -> None:
    """A new login is taken by the fast path (no parser): the device is online at once, but its
    200 waits for the journal's barrier, as on the full path; a retransmission meanwhile is
    absorbed by the held transaction, and one after the 200 gets the same 200 again. A failed
    barrier sends no 200 (counted as a task error); an online device's new Call-ID (no
    transition to record) is answered at once, its catalog queries queued behind the 200."""
    rig = make_rig(1e9)
    health = rig.adapter.health = DurableHealth()
    first = login(FRESH, BOUND, call_id="boot-1", branch="z9hG4bKl1")
    taken, kept, sent = endpoint_path(rig, first, BOUND)
    assert (taken, kept, sent) == (True, False, None)
    assert rig.adapter.presence.get(FRESH).online  # type: ignore[union-attr]
    assert health.calls == [(f"device:{FRESH}", "online")] and rig.endpoint.sent == []
    assert endpoint_path(rig, first, BOUND) == (False, False, None)  # retransmission: absorbed, not judged
    await asyncio.sleep(0)
    assert rig.endpoint.sent == []  # not durable yet
    assert health.barrier is not None
    health.barrier.set_result(None)
    await asyncio.sleep(0)
    assert len(rig.endpoint.sent) == 1 and rig.endpoint.sent[0].startswith(b"SIP/2.0 200 OK\r\n")
    assert b"\r\nCall-ID: boot-1\r\n" in rig.endpoint.sent[0] and b"\r\nExpires: 3600\r\n" in rig.endpoint.sent[0]
    assert rig.adapter.stats["responses:200"] == 1 and rig.adapter.stats["auth:ok"] == 1
    assert endpoint_path(rig, first, BOUND) == (False, False, rig.endpoint.sent[0])  # Timer J: the same 200
    assert len(rig.endpoint.sent) == 2

    again = login(A, BOUND, call_id="boot-2", branch="z9hG4bKl2")  # online, another Call-ID: no transition
    taken, kept, sent = endpoint_path(rig, again, BOUND)
    assert (taken, kept) == (True, True) and sent is not None and b"\r\nCall-ID: boot-2\r\n" in sent
    assert len(rig.endpoint.sent) == 3 and rig.adapter.stats["responses:200"] == 2

    failing = make_rig(1e9)
    health = failing.adapter.health = DurableHealth()
    assert endpoint_path(failing, login(FRESH, BOUND, call_id="boot-3", branch="z9hG4bKl3"), BOUND)[0]
    assert health.barrier is not None
    health.barrier.set_exception(OSError("fsync failed"))
    await asyncio.sleep(0)
    assert failing.endpoint.sent == [] and failing.adapter.stats["task_errors"] == 1
    for r in (rig, failing):
        await r.adapter._tasks.close()
