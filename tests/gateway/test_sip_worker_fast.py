"""The SIP worker's fast paths (keepalive 200, first-REGISTER 401) against its parsed path.

Two `SipWorker`s, each behind a real `SipEndpoint` (not bound: its sends are recorded), get the
same generated datagrams and link messages from main. One always takes the parsed path (the hook's
parse_datagram + `_keepalive`, the transaction layer + `on_request`), the other offers the plain
ones to `fast_keepalive` / `fast_register` first, as gateway/app/sip_worker.py wires them. After
each datagram both must have sent the same bytes (a challenge's random nonce aside), sent main the
same reports (KEEPALIVE, FORWARD, BAN, LOGIN, FAILURE, ...), and hold the same counters and
presence copy; a declined fast path must have changed nothing. Inputs: plain keepalives and
REGISTERs (no credentials, good ones, a wrong password, garbage), from devices bound here, bound
elsewhere, revoked, unbound, unknown, invalid; hostile variants of them (compact or lower-case
names, padding, duplicates, a second Via, a To tag, LF line ends, non-ASCII, a wrong
Content-Length, trailing bytes, truncation, a flipped byte); main re-binding, dropping, revoking
and re-approving a device in between; a flood guard that trips; a max_message below the scan's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import pickle
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app.sip_ipc import Kind
from gateway.app.sip_worker import SipWorker
from gateway.config import Settings, SipSettings, WhitelistSettings
from gateway.gb import builders
from gateway.sip import digest, fastpath
from gateway.sip.events import Peer
from gateway.sip.transport import SipEndpoint, _UdpProtocol
from whitelist.decide import Policy
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
PW = "p"
A, REVOKED, FRESH, ELSEWHERE, UNKNOWN = (f"3402000000132000{n:04d}" for n in (1, 2, 3, 4, 5))
BOUND = Peer("udp", "192.0.2.1", 5060, None)
PEERS = [BOUND, Peer("udp", "192.0.2.1", 5070, None), Peer("udp", "198.51.100.9", 5060, None)]
T0 = 1000.0


@pytest.fixture(scope="module")
def data_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield d


def entry(device_id: str, status: EntryStatus = EntryStatus.APPROVED) -> Entry:
    return Entry(device_id=device_id, status=status, credential=Credential.from_password(device_id, REALM, PW))


class Link:
    """Main's end of the link: what the worker reported, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, kind: Kind, *fields: Any) -> None:
        self.sent.append((kind, *fields))


class Endpoint(SipEndpoint):
    """An endpoint without sockets: what it would send is recorded."""

    def __init__(self, app: SipWorker, max_message: int) -> None:
        super().__init__(app, max_message=max_message, t1=0.5, t2=4.0, t4=5.0, advertise="127.0.0.1")
        self.out: list[bytes] = []

    def _send(self, data: bytes, peer: Peer) -> None:
        self.out.append(data)


class ParsedWorker(SipWorker):
    """The worker as it was before its fast paths: every keepalive parsed."""

    def fast_keepalive(self, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        return None


class FastWorker(SipWorker):
    """Records whether a fast path took the request, and checks a decline changed nothing."""

    taken = False
    kept = False

    def fast_keepalive(self, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        return self._watch(super().fast_keepalive, s, peer)

    def fast_register(self, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        return self._watch(super().fast_register, s, peer)

    def _watch(self, handler: Any, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        self.kept = False
        before = snapshot(self)
        answer: fastpath.FastAnswer | None = handler(s, peer)
        if answer is None:
            assert snapshot(self) == before, "a declined fast path changed state"
        self.taken = answer is not None
        # a refresh's 200 (kept) or a login's (held until main ACKs): its To tag is random, as the parsed path's
        self.kept = answer is not None and (answer.keep or answer.status is None)
        return answer


@dataclasses.dataclass
class Rig:
    worker: SipWorker
    endpoint: Endpoint
    link: Link
    clock: list[float]


def make_rig(cls: type[SipWorker], data_dir: str, flood: int, max_message: int) -> Rig:
    s = Settings(data_dir=data_dir, sip=SipSettings(domain=REALM, max_message=max_message),
                 whitelist=WhitelistSettings(flood_max_per_second=flood, flood_ban_for=2.0))
    clock, link = [T0], Link()
    policy = Policy([entry(A), entry(REVOKED, EntryStatus.REVOKED), entry(FRESH), entry(ELSEWHERE)])
    worker = cls(1, s, policy, link, clock=lambda: clock[0])  # type: ignore[arg-type]
    endpoint = Endpoint(worker, max_message)
    worker.endpoint = endpoint
    endpoint.datagram_hook = worker.datagram_hook
    if cls is not ParsedWorker:
        endpoint.fast_path = worker.fast_register  # as _serve wires it
        endpoint.fast_credentials = True
    for dev, at in ((A, BOUND), (REVOKED, BOUND), (ELSEWHERE, PEERS[2])):  # main's bindings (BIND)
        worker.on_link((Kind.BIND, dev, at.transport, at.host, at.port, f"reg-{dev}", True))
    return Rig(worker, endpoint, link, clock)


def snapshot(worker: SipWorker) -> dict[str, Any]:
    assert worker.endpoint is not None
    return {"presence": sorted((r.device_id, dataclasses.asdict(r)) for r in worker.presence.records()),
            "stats": dict(worker.stats), "endpoint": dict(worker.endpoint.stats),
            "transactions": len(worker.endpoint.transactions), "link": len(worker.link.sent),  # type: ignore[attr-defined]
            "pending": sorted(worker._pending)}


_NONCE = re.compile(rb'nonce="[0-9a-f]+"')
_TO_TAG = re.compile(rb"(\r\nTo: [^\r]*;tag=)[0-9a-f]+")


def unrandom(data: bytes, *, stateful: bool) -> bytes:
    """Without the random parts: a challenge's nonce, and the To tag of an answer both rigs built
    through the parsed path (random when stateful); a fast answer's tag is compared."""
    data = _NONCE.sub(b'nonce="-"', data)
    return _TO_TAG.sub(rb"\1-", data) if stateful else data


def receive(rig: Rig, data: bytes, peer: Peer) -> None:
    """A datagram on the worker's socket, then what main does with its reports: every answer
    that waits for main (a login, a counted failure) is ACKed."""
    seen = len(rig.link.sent)
    _UdpProtocol(rig.endpoint).datagram_received(data, (peer.host, peer.port))
    for msg in rig.link.sent[seen:]:
        if msg[0] == Kind.LOGIN and msg[1]:
            rig.worker.on_link((Kind.ACK, msg[1], True))
        elif msg[0] == Kind.FAILURE:
            rig.worker.on_link((Kind.ACK, msg[4], True))
    # the endpoint's timer: stateless answers end their transaction
    rig.endpoint._handle(rig.endpoint.transactions.handle_timer(rig.endpoint._loop.time()))


# ---------------------------------------------------------------------------- inputs
def nonce_for(rig: Rig, peer: Peer) -> str:
    """A nonce valid for both rigs (same node secret and worker index), issued by neither."""
    return rig.worker.registrar.nonces.issue(rig.clock[0], f"{peer.transport}:{peer.host}:{peer.port}")


def build(spec: dict[str, Any], nonce_for: Callable[[Peer], str] | None) -> bytes:
    device, peer, method = spec["device"], spec["peer"], spec["method"]
    head = [f"{method} sip:34020000002000000001@{REALM} SIP/2.0",
            f"Via: SIP/2.0/UDP {peer.host}:{peer.port};rport;branch=z9hG4bK{spec['branch']}",
            f"From: <sip:{device}@{REALM}>;tag=t{spec['tag']}",
            f"To: <sip:{device if method == 'REGISTER' else '34020000002000000001'}@{REALM}>",
            f"Call-ID: reg-{device}" if spec.get("bound_call") else f"Call-ID: c{spec['call']}@x",
            f"CSeq: {spec['cseq']} {method}", "Max-Forwards: 70"]
    body = b""
    if method == "MESSAGE":
        kind = spec["body"]
        if kind == "keepalive":
            body = builders.build_keepalive(device, spec["sn"])
        elif kind == "foreign":
            body = builders.build_keepalive(FRESH if device != FRESH else A, 1)
        elif kind == "alarm":
            body = builders.build_message("Notify", "Alarm", 1, device, fields={"AlarmPriority": "1"})
        head.append(spec["ctype"])
    else:
        head.append(f"Contact: <sip:{device}@{peer.host}:{peer.port}>")
        if spec["expires"]:
            head.append(spec["expires"])
        auth = spec["auth"]
        if auth == "garbage":
            head.append(f'Authorization: Digest username="{device}", realm="{REALM}", nonce="00", '
                        f'uri="sip:34020000002000000001@{REALM}", response="00"')
        elif auth in ("good", "badpass"):
            assert nonce_for is not None
            www = digest.challenge(REALM, nonce_for(peer), qop=True)
            head.append("Authorization: " + digest.authorization(
                www, method="REGISTER", uri=f"sip:34020000002000000001@{REALM}", username=device,
                password=PW if auth == "good" else "wrong", nc=spec["nc"], cnonce="cn"))
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def mutate(data: bytes, how: str, pos: int, byte: int) -> bytes:
    """A hostile variant of a plain request (most are still valid SIP for the parser)."""
    if how == "compact":
        return data.replace(b"\r\nVia:", b"\r\nv:", 1)
    if how == "lower":
        return data.replace(b"\r\nCall-ID:", b"\r\ncall-id:", 1)
    if how == "pad":
        return data.replace(b"\r\nFrom: ", b"\r\nFrom:   ", 1)
    if how == "dup":
        return data.replace(b"\r\nMax-Forwards: 70", b"\r\nMax-Forwards: 70\r\nMax-Forwards: 70", 1)
    if how == "via2":
        return data.replace(b"\r\nFrom:", b"\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKx\r\nFrom:", 1)
    if how == "totag":
        return re.sub(rb"(\r\nTo: <[^>]*>)", rb"\1;tag=zz", data, count=1)
    if how == "lf":
        return data.replace(b"\r\n", b"\n")
    if how == "utf8":
        return data.replace(b"\r\nMax-Forwards: 70", "\r\nUser-Agent: caméra".encode(), 1)
    if how == "cl":
        return re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: %d" % (int(m.group(1)) + 1), data)
    if how == "trail":
        return data + b"x"
    if how == "cut":
        return data[: pos % max(1, len(data))]
    if how == "flip":
        i = pos % len(data)
        return data[:i] + bytes([byte]) + data[i + 1 :]
    return data


@st.composite
def events(draw: st.DrawFn) -> tuple[str, Any]:
    """A datagram (its spec) or a message from main."""
    if draw(st.integers(0, 9)) == 0:
        return "main", draw(st.sampled_from(["bind_a_here", "bind_a_other", "drop_a", "revoke_a", "approve_a"]))
    method = draw(st.sampled_from(["MESSAGE", "MESSAGE", "REGISTER"]))
    spec: dict[str, Any] = {
        "device": draw(st.sampled_from([A, A, A, A, REVOKED, FRESH, ELSEWHERE, UNKNOWN, "notanid"])),
        "peer": draw(st.sampled_from([BOUND, BOUND, BOUND, *PEERS])), "method": method,
        "branch": draw(st.integers(0, 3)),  # repeats: retransmissions meet live transactions
        "tag": draw(st.integers(0, 2)), "call": draw(st.integers(0, 2)), "cseq": draw(st.integers(1, 3)),
        "body": draw(st.sampled_from(["keepalive", "keepalive", "keepalive", "foreign", "alarm", "none"])),
        "sn": draw(st.integers(1, 99)),
        "ctype": draw(st.sampled_from(["Content-Type: Application/MANSCDP+xml"] * 3 + ["Content-Type: text/plain"])),
        "expires": draw(st.sampled_from(["Expires: 3600", "Expires: 3600", "Expires: 0", "Expires: x", None])),
        "auth": draw(st.sampled_from([None, None, "good", "badpass", "garbage"])), "nc": draw(st.integers(1, 2)),
        "mutation": draw(st.sampled_from(["none"] * 12 + ["compact", "lower", "pad", "dup", "via2", "totag", "lf",
                                                           "utf8", "cl", "trail", "cut", "flip"])),
        "pos": draw(st.integers(0, 2000)), "byte": draw(st.integers(0, 255)),
        "dt": draw(st.sampled_from([0.0, 0.0, 0.01, 0.5, 3.0])),
    }
    if draw(st.integers(0, 2)) == 0:  # the steady swarm: a plain keepalive or first REGISTER from the bound address
        spec.update(device=A if method == "MESSAGE" else draw(st.sampled_from([A, FRESH])), peer=BOUND,
                    body="keepalive", ctype="Content-Type: Application/MANSCDP+xml", expires="Expires: 3600",
                    auth=None, mutation="none")
        if method == "REGISTER" and draw(st.booleans()):  # a storm's refresh: digest, the binding's Call-ID
            spec.update(device=A, auth=draw(st.sampled_from(["good", "good", "badpass"])), bound_call=True)
    elif method == "REGISTER" and draw(st.integers(0, 3)) == 0:
        spec["bound_call"] = True  # a refresh's Call-ID on any other variant
    return "datagram", spec


def from_main(rig: Rig, what: str) -> None:
    if what.startswith("bind_a"):
        at = BOUND if what == "bind_a_here" else PEERS[1]
        rig.worker.on_link((Kind.BIND, A, at.transport, at.host, at.port, "reg-a", True))
    elif what == "drop_a":
        rig.worker.on_link((Kind.DROP, A))
    else:
        status = EntryStatus.REVOKED if what == "revoke_a" else EntryStatus.APPROVED
        rig.worker.on_link((Kind.POLICY, pickle.dumps({A: entry(A, status)}), pickle.dumps(None)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=16), st.sampled_from([10**9, 2]), st.sampled_from([65536, 65536, 420]))
def test_worker_fast_paths_answer_and_report_exactly_what_the_parsed_path_does(
        data_dir: str, evs: list[tuple[str, Any]], flood: int, max_message: int) -> None:
    async def run() -> None:
        parsed = make_rig(ParsedWorker, data_dir, flood, max_message)
        fast = make_rig(FastWorker, data_dir, flood, max_message)
        fw = fast.worker
        assert isinstance(fw, FastWorker)
        for kind, what in evs:
            if kind == "main":
                for rig in (parsed, fast):
                    from_main(rig, what)
                continue
            for rig in (parsed, fast):
                rig.clock[0] += what["dt"]
            data = mutate(build(what, functools.partial(nonce_for, parsed)), what["mutation"], what["pos"],
                          what["byte"])
            sent = (len(parsed.endpoint.out), len(fast.endpoint.out))
            reported = (len(parsed.link.sent), len(fast.link.sent))
            fw.taken = False
            receive(parsed, data, what["peer"])
            receive(fast, data, what["peer"])
            stateful = not fw.taken or fw.kept
            got = [unrandom(d, stateful=stateful) for d in fast.endpoint.out[sent[1]:]]
            expected = [unrandom(d, stateful=stateful) for d in parsed.endpoint.out[sent[0]:]]
            assert got == expected, data
            assert fast.link.sent[reported[1]:] == parsed.link.sent[reported[0]:], data
            a, b = snapshot(parsed.worker), snapshot(fw)
            assert a == b, data
        for rig in (parsed, fast):
            rig.worker.flush_stats()
        assert fast.link.sent == parsed.link.sent

    asyncio.run(run())


def test_the_common_cases_take_the_worker_fast_paths(data_dir: str) -> None:
    """A plain keepalive from the bound address: 200 and the KEEPALIVE report, no parse; a first
    REGISTER: the 401, whose nonce this worker accepts from that address; neither holds a transaction."""
    async def run() -> None:
        rig = make_rig(FastWorker, data_dir, 10**9, 65536)
        w = rig.worker
        assert isinstance(w, FastWorker)
        ka = build({"device": A, "peer": BOUND, "method": "MESSAGE", "branch": 1, "tag": 1, "call": 1, "cseq": 2,
                    "body": "keepalive", "sn": 5, "ctype": "Content-Type: Application/MANSCDP+xml"}, None)
        receive(rig, ka, BOUND)
        assert w.taken and rig.endpoint.out[-1].startswith(b"SIP/2.0 200 OK\r\n")
        assert rig.link.sent[-1] == (Kind.KEEPALIVE, A, T0)
        assert w.presence.get(A).last_keepalive == T0  # type: ignore[union-attr]
        reg = build({"device": FRESH, "peer": BOUND, "method": "REGISTER", "branch": 2, "tag": 1, "call": 2,
                     "cseq": 1, "expires": "Expires: 3600", "auth": None}, None)
        receive(rig, reg, BOUND)
        assert w.taken and rig.endpoint.out[-1].startswith(b"SIP/2.0 401 Unauthorized\r\n")
        nonce = re.search(rb'nonce="([0-9a-f]+)"', rig.endpoint.out[-1]).group(1).decode()  # type: ignore[union-attr]
        assert w.registrar.nonces.check(nonce, T0, "udp:192.0.2.1:5060") is digest.NonceState.VALID
        assert len(rig.endpoint.transactions) == 0
        assert w.stats["workers:register"] == 1 and w.stats["responses:401"] == 1
        assert rig.endpoint.stats["requests:MESSAGE"] == rig.endpoint.stats["requests:REGISTER"] == 1

    asyncio.run(run())


# ---------------------------------------------------------------------------- refreshes
# A re-registration storm is mostly REGISTERs with digest from bound, online devices (the same
# Call-ID: RFC 3261 §10.2.4 refreshes). The scenarios below — the plain refresh and the attacks
# on it — run on both rigs; after every step both must have answered, reported, counted and
# bound exactly alike (To tags aside: a stateful answer's is random on both).
NEAR_MISSES = (A[:-1] + "2", A[:-1], A + "1", A[:-1] + "x", "0" + A[1:])


def refresh(device: str, peer: Peer, nonce: str, *, branch: str, password: str = PW, nc: int = 1,
            call_id: str | None = None, username: str | None = None, expires: str = "3600") -> bytes:
    """A REGISTER with digest as sipp's reg_auth.xml sends it (Call-ID: main's binding's, by default)."""
    auth = digest.authorization(digest.challenge(REALM, nonce, qop=True), method="REGISTER",
                                uri=f"sip:34020000002000000001@{REALM}", username=username or device,
                                password=password, nc=nc, cnonce="cn")
    return ("\r\n".join([
        f"REGISTER sip:34020000002000000001@{REALM} SIP/2.0",
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};rport;branch=z9hG4bK-{branch}",
        "Max-Forwards: 70",
        f"From: <sip:{device}@{REALM}>;tag=t{branch}",
        f"To: <sip:{device}@{REALM}>",
        f"Call-ID: {call_id or f'reg-{device}'}",
        "CSeq: 2 REGISTER",
        f"Contact: <sip:{device}@{peer.host}:{peer.port}>",
        f"Authorization: {auth}",
        f"Expires: {expires}",
        "User-Agent: sipp-gb28181-ipc",
        "Content-Length: 0", "", ""])).encode()


class Pair:
    """The parsed rig and the fast rig, fed the same steps and compared after each."""

    def __init__(self, data_dir: str, flood: int = 10**9) -> None:
        self.parsed = make_rig(ParsedWorker, data_dir, flood, 65536)
        self.fast = make_rig(FastWorker, data_dir, flood, 65536)
        self.taken: list[bool] = []
        self.tick(1.0)  # nonces issued at a worker's start are refused (ReplayGuard.forget_before)

    def nonce(self, peer: Peer = BOUND) -> str:
        return nonce_for(self.parsed, peer)

    def tick(self, dt: float) -> None:
        for rig in (self.parsed, self.fast):
            rig.clock[0] += dt

    def main(self, msg: tuple[Any, ...]) -> None:
        for rig in (self.parsed, self.fast):
            rig.worker.on_link(msg)

    def send(self, data: bytes, peer: Peer = BOUND) -> list[bytes]:
        """The datagram on both; returns the fast rig's answers (raw)."""
        sent = (len(self.parsed.endpoint.out), len(self.fast.endpoint.out))
        reported = (len(self.parsed.link.sent), len(self.fast.link.sent))
        fw = self.fast.worker
        assert isinstance(fw, FastWorker)
        fw.taken = False
        receive(self.parsed, data, peer)
        receive(self.fast, data, peer)
        self.taken.append(fw.taken)
        got = self.fast.endpoint.out[sent[1]:]
        assert [unrandom(d, stateful=True) for d in got] == [
            unrandom(d, stateful=True) for d in self.parsed.endpoint.out[sent[0]:]], data
        assert self.fast.link.sent[reported[1]:] == self.parsed.link.sent[reported[0]:], data
        assert snapshot(self.parsed.worker) == snapshot(fw), data
        return got

    def done(self) -> None:
        for rig in (self.parsed, self.fast):
            rig.worker.flush_stats()
        assert self.fast.link.sent == self.parsed.link.sent
        assert self.fast.endpoint.transactions.stats == self.parsed.endpoint.transactions.stats


def _status(answers: list[bytes]) -> list[str]:
    return [a.split(b"\r\n", 1)[0].decode() for a in answers]


def test_refresh_and_its_retransmission_and_replay(data_dir: str) -> None:
    """The plain refresh (200, LOGIN seq 0), a retransmission (the same 200 from the transaction),
    the next nc on the same nonce (200), then the first Authorization played back on a new
    branch (401 and the replay alarm) and a stale nonce (401 stale)."""
    async def run() -> None:
        p = Pair(data_dir)
        nonce = p.nonce()
        first = refresh(A, BOUND, nonce, branch="r1")
        ok = p.send(first)
        assert _status(ok) == ["SIP/2.0 200 OK"]
        assert p.fast.link.sent[-1][:3] == (Kind.LOGIN, 0, A)
        assert p.send(first) == ok  # the retransmission: the very same bytes, judged once
        assert _status(p.send(refresh(A, BOUND, nonce, branch="r2", nc=2))) == ["SIP/2.0 200 OK"]
        replay = first.replace(b"z9hG4bK-r1", b"z9hG4bK-r3")
        assert _status(p.send(replay)) == ["SIP/2.0 401 Unauthorized"]
        assert p.fast.link.sent[-1][:3] == (Kind.ALARM, A, "alarm_digest_replay")
        p.tick(301.0)  # past sip.nonce_ttl
        stale = p.send(refresh(A, BOUND, nonce, branch="r4", nc=3))
        assert _status(stale) == ["SIP/2.0 401 Unauthorized"] and b"stale=TRUE" in stale[0]
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="r5"))) == ["SIP/2.0 200 OK"]
        p.done()

    asyncio.run(run())


def test_refresh_from_elsewhere_is_handled_as_before(data_dir: str) -> None:
    """The bound ID from another port of the same host (its own nonce: the binding moves; the
    bound address's nonce: not ours there), and from another host (a suspected clone)."""
    async def run() -> None:
        p = Pair(data_dir)
        other_port, other_host = PEERS[1], PEERS[2]
        assert _status(p.send(refresh(A, other_port, p.nonce(BOUND), branch="f1"), other_port)) == [
            "SIP/2.0 401 Unauthorized"]
        assert _status(p.send(refresh(A, other_host, p.nonce(other_host), branch="f2"), other_host)) == [
            "SIP/2.0 403 Forbidden"]
        assert p.fast.link.sent[-1][:3] == (Kind.ALARM, A, "alarm_clone_suspected")
        assert _status(p.send(refresh(A, other_port, p.nonce(other_port), branch="f3"), other_port)) == [
            "SIP/2.0 200 OK"]
        assert p.fast.worker.presence.get(A).port == other_port.port  # type: ignore[union-attr]
        # and back: main has not re-bound it yet, the worker's copy moved
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="f4"))) == ["SIP/2.0 200 OK"]
        p.done()

    asyncio.run(run())


def test_wrong_password_and_lockout_mid_storm(data_dir: str) -> None:
    """Wrong passwords: 403 once main has counted them (FAILURE, ACK); after max_failures the ID is
    locked, and its right password is refused too."""
    async def run() -> None:
        p = Pair(data_dir)
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="w0"))) == ["SIP/2.0 200 OK"]
        for k in range(5):
            assert _status(p.send(refresh(A, BOUND, p.nonce(), branch=f"w{k + 1}", password="wrong"))) == [
                "SIP/2.0 403 Forbidden"]
        assert any(m[0] == Kind.ALARM and m[2] == "alarm_lockout" for m in p.fast.link.sent)
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="w9"))) == ["SIP/2.0 403 Forbidden"]
        assert p.fast.worker.stats["refused:LOCKED_ID"] == 1
        p.done()

    asyncio.run(run())


def test_a_failure_then_success_reports_the_success(data_dir: str) -> None:
    """One wrong password, then the right one: SUCCESS goes to main before the LOGIN."""
    async def run() -> None:
        p = Pair(data_dir)
        p.send(refresh(A, BOUND, p.nonce(), branch="s1", password="wrong"))
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="s2"))) == ["SIP/2.0 200 OK"]
        assert [m[0] for m in p.fast.link.sent[-2:]] == [Kind.SUCCESS, Kind.LOGIN]
        p.done()

    asyncio.run(run())


def test_revoked_dropped_and_rebound_mid_storm(data_dir: str) -> None:
    """Main revokes the ID between two refreshes (403), re-approves and re-binds it (200); main
    drops the binding (a new login, held for main's ACK); a new Call-ID (a new login); Expires 0
    (an unregistration)."""
    async def run() -> None:
        p = Pair(data_dir)
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v1"))) == ["SIP/2.0 200 OK"]
        p.main((Kind.POLICY, pickle.dumps({A: entry(A, EntryStatus.REVOKED)}), pickle.dumps(None)))
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v2"))) == ["SIP/2.0 403 Forbidden"]
        p.main((Kind.POLICY, pickle.dumps({A: entry(A)}), pickle.dumps(None)))
        p.main((Kind.BIND, A, "udp", BOUND.host, BOUND.port, f"reg-{A}", True))
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v3"))) == ["SIP/2.0 200 OK"]
        p.main((Kind.BIND, A, "udp", BOUND.host, BOUND.port, f"reg-{A}", False))  # main: offline
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v4"))) == ["SIP/2.0 200 OK"]
        assert p.fast.link.sent[-1][0] == Kind.LOGIN and p.fast.link.sent[-1][1] > 0  # back online: held
        p.main((Kind.DROP, A))
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v5"))) == ["SIP/2.0 200 OK"]
        assert p.fast.link.sent[-1][0] == Kind.LOGIN and p.fast.link.sent[-1][1] > 0  # held: a new login
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v6", call_id="other"))) == ["SIP/2.0 200 OK"]
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="v7", call_id="other", expires="0"))) == [
            "SIP/2.0 200 OK"]
        assert p.fast.link.sent[-1][:2] == (Kind.UNREGISTER, A)
        p.done()

    asyncio.run(run())


@pytest.mark.parametrize("device", NEAR_MISSES)
def test_near_miss_ids(data_dir: str, device: str) -> None:
    """IDs one digit off, short, long, with a letter, as the From user, the digest username, or
    both; and the bound ID with a near-miss username."""
    async def run() -> None:
        p = Pair(data_dir)
        p.send(refresh(device, BOUND, p.nonce(), branch="n1", call_id=f"reg-{A}"))
        p.send(refresh(device, BOUND, p.nonce(), branch="n2", call_id=f"reg-{A}", username=A))
        p.send(refresh(A, BOUND, p.nonce(), branch="n3", username=device))
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="n4"))) == ["SIP/2.0 200 OK"]
        p.done()

    asyncio.run(run())


def test_refresh_flood(data_dir: str) -> None:
    """A source over the flood limit: ignored (no answer, the transaction held) and banned."""
    async def run() -> None:
        p = Pair(data_dir, flood=2)
        nonce = p.nonce()
        for k in range(4):
            p.send(refresh(A, BOUND, nonce, branch=f"x{k}", nc=k + 1))
        assert any(m[0] == Kind.BAN for m in p.fast.link.sent)
        p.done()

    asyncio.run(run())


def test_the_plain_refresh_takes_the_worker_fast_path(data_dir: str) -> None:
    """The storm's refresh is answered from the scan (its 200 kept in a transaction for Timer J);
    every attack above it declines."""
    async def run() -> None:
        p = Pair(data_dir)
        first = refresh(A, BOUND, p.nonce(), branch="t1")
        p.send(first)
        assert p.taken == [True]
        assert len(p.fast.endpoint.transactions) == 1  # Timer J holds the 200
        p.send(first)  # the retransmission meets the transaction, not the fast path
        p.send(first.replace(b"z9hG4bK-t1", b"z9hG4bK-t2"))  # replayed
        p.send(refresh(A, BOUND, p.nonce(), branch="t3", password="wrong"))
        p.send(refresh(A, PEERS[1], p.nonce(BOUND), branch="t4"), PEERS[1])
        p.send(refresh(NEAR_MISSES[0], BOUND, p.nonce(), branch="t5", call_id=f"reg-{A}"))
        assert p.taken == [True, False, False, False, False, False]
        p.done()

    asyncio.run(run())


def test_a_login_takes_the_worker_fast_path_and_waits_for_main(data_dir: str) -> None:
    """A REGISTER with credentials that is a login (a fresh device; a bound one with a new
    Call-ID) is decided from the scan, as the parsed path decides it: LOGIN to main with a
    sequence number and no answer until main ACKs — a retransmission meanwhile is absorbed by the
    held transaction — then the 200; a login main refuses (the ID was locked meanwhile) gets the
    uniform 403 and the worker forgets the binding."""
    async def run() -> None:
        p = Pair(data_dir)
        assert _status(p.send(refresh(FRESH, BOUND, p.nonce(), branch="l1", call_id="boot-1"))) == ["SIP/2.0 200 OK"]
        assert _status(p.send(refresh(A, BOUND, p.nonce(), branch="l2", call_id="boot-2"))) == ["SIP/2.0 200 OK"]
        assert p.taken == [True, True]
        p.done()

        rig = make_rig(FastWorker, data_dir, 10**9, 65536)
        rig.clock[0] += 1.0
        udp = _UdpProtocol(rig.endpoint)
        fresh = refresh(FRESH, BOUND, nonce_for(rig, BOUND), branch="l3", call_id="boot-3")
        udp.datagram_received(fresh, (BOUND.host, BOUND.port))
        kind, seq, device = rig.link.sent[-1][:3]
        assert (kind, device) == (Kind.LOGIN, FRESH) and seq > 0 and rig.endpoint.out == []
        udp.datagram_received(fresh, (BOUND.host, BOUND.port))  # retransmitted before main answers
        assert rig.endpoint.out == [] and len(rig.link.sent) == 1
        rig.worker.on_link((Kind.ACK, seq, True))
        assert _status(rig.endpoint.out) == ["SIP/2.0 200 OK"] and b"Call-ID: boot-3\r\n" in rig.endpoint.out[0]
        udp.datagram_received(fresh, (BOUND.host, BOUND.port))  # after it: the same 200 again (Timer J)
        assert rig.endpoint.out[1] == rig.endpoint.out[0]

        udp.datagram_received(refresh(A, BOUND, nonce_for(rig, BOUND), branch="l4", call_id="boot-4"),
                              (BOUND.host, BOUND.port))
        kind, seq, device = rig.link.sent[-1][:3]
        assert (kind, device) == (Kind.LOGIN, A) and seq > 0
        rig.worker.on_link((Kind.ACK, seq, False))  # main: locked meanwhile
        assert _status(rig.endpoint.out[2:]) == ["SIP/2.0 403 Forbidden"]
        assert rig.worker.presence.get(A) is None and rig.worker.stats["refused:LOCKED_ID"] == 1

    asyncio.run(run())
