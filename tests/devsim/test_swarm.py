"""The device swarm: its pure pieces against the gateway's own codecs, and one real registration run."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from devsim import messages as sim_sip
from devsim.net import TxTable
from devsim.stats import percentile
from devsim.swarm import DeviceSwarm, SimChannel, SimDevice, make_devices
from gateway.gb import manscdp
from gateway.sip import digest
from gateway.sip.message import Request, Response, make_response, parse_message, serialize

REALM = "3402000000"
DEV = "34020000001320000001"
URI = f"sip:34020000002000000001@{REALM}"
LOCAL = sim_sip.Local("UDP", "127.0.0.1", 15060, "34020000002000000001", REALM)


# --------------------------------------------------------------------------- digest

@pytest.mark.parametrize("qop", [True, False])
@pytest.mark.parametrize("alg", [digest.Algorithm.MD5, digest.Algorithm.SHA256])
@pytest.mark.parametrize("impl", [sim_sip.authorization, sim_sip._private_authorization])
def test_digest_answer_verifies_with_the_gateway(impl, alg, qop):
    nonce = digest.NonceIssuer(b"k" * 32).issue(1000.0)
    challenge = digest.challenge(REALM, nonce, alg, qop=qop)
    value = impl(challenge, method="REGISTER", uri=URI, username=DEV, password="12345678")
    creds = digest.parse_credentials(value)
    assert creds.nonce == nonce and creds.uri == URI and creds.realm == REALM
    assert (creds.qop == "auth") is qop
    good = digest.ha1(alg.value, DEV, REALM, "12345678")
    bad = digest.ha1(alg.value, DEV, REALM, "wrong-password")
    assert digest.verify(creds, "REGISTER", good)
    assert not digest.verify(creds, "REGISTER", bad)
    assert not digest.verify(creds, "MESSAGE", good)


def test_digest_matches_the_worked_example():
    """gb28181.md §3.3: no qop, password Gb12345678 → 990b33666d9318d1c6f496086be91942."""
    ch = 'Digest realm="4401060000", nonce="8f2c1d6e9a3b47c0b5e4d21f6a7c9e30", algorithm=MD5'
    value = sim_sip._private_authorization(ch, method="REGISTER", uri="sip:44010600002000000001@4401060000",
                                           username="44010600001320000101", password="Gb12345678")
    assert 'response="990b33666d9318d1c6f496086be91942"' in value


# --------------------------------------------------------------------------- catalog paging

def _items(n: int) -> list[manscdp.CatalogItem]:
    chans = [SimChannel(sim_sip.channel_id(DEV, k), f"通道 {k}") for k in range(n)]
    return sim_sip.channel_items(DEV, chans, manufacturer="m", model="x", civil_code="340200")


def test_ten_channels_make_pages_of_at_most_four_with_sumnum():
    items = _items(10)
    pages = sim_sip.catalog_pages(DEV, 77, items)
    decoded = [manscdp.catalog_response(manscdp.parse(p)) for p in pages]
    assert [len(p.items) for p in decoded] == [4, 4, 2]
    assert all(p.sum_num == 10 and p.sn == 77 and p.device_id == DEV for p in decoded)
    ids = [i.device_id for p in decoded for i in p.items]
    assert ids == [i.device_id for i in items] and len(set(ids)) == 10
    assert all(i.parent_id == DEV and i.status == "ON" for p in decoded for i in p.items)
    assert decoded[0].items[1].name == "通道 1"  # GB2312 round trip


def test_no_channels_is_one_page_with_sumnum_zero():
    pages = sim_sip.catalog_pages(DEV, 5, [])
    assert len(pages) == 1
    page = manscdp.catalog_response(manscdp.parse(pages[0]))
    assert page.sum_num == 0 and page.items == []


def test_channel_ids_are_unique_20_digit_ids():
    devices = make_devices(300, password="p", channels=8)
    ids = [c.id for d in devices for c in d.channels]
    assert len(set(ids)) == len(ids) == 2400
    assert all(len(i) == 20 and i.isdigit() and i[10:13] == "131" for i in ids)
    assert devices[0].device_id == "34020000001320000001" and devices[-1].device_id.endswith("0300")


# --------------------------------------------------------------------------- wire templates

def test_keepalive_body_is_what_the_codec_builds_and_parses():
    body = sim_sip.keepalive_body(DEV, 43)
    assert body == manscdp.build_keepalive(DEV, 43)
    ka = manscdp.keepalive(manscdp.parse(body))
    assert (ka.device_id, ka.sn, ka.status) == (DEV, 43, "OK")


def test_keepalive_message_parses_as_sip():
    body = sim_sip.keepalive_body(DEV, 1)
    data = sim_sip.message_request(LOCAL, DEV, body, tag="123", call_id="c1@x", cseq=20, branch="z9hG4bKabc")
    msg = parse_message(data)
    assert isinstance(msg, Request) and msg.method == "MESSAGE"
    assert msg.from_.uri.user == DEV and msg.to.uri.user == "34020000002000000001"
    assert msg.top_via.branch == "z9hG4bKabc" and msg.cseq == (20, "MESSAGE")
    assert msg.body == body and msg.content_type == "application/manscdp+xml"


def test_register_request_and_response_peek():
    data = sim_sip.register_request(LOCAL, DEV, tag="9", call_id="c2@x", cseq=2, expires=3600,
                                    branch="z9hG4bKr1", authorization='Digest username="a"')
    req = parse_message(data)
    assert isinstance(req, Request) and req.method == "REGISTER" and req.uri == URI
    assert req.headers.get("Expires") == "3600" and req.headers.get("Authorization") == 'Digest username="a"'
    assert req.headers.get("Contact") == f"<sip:{DEV}@127.0.0.1:15060>"
    resp = serialize(make_response(req, 401, to_tag="t", received=("127.0.0.1", 40000),
                                   headers=[("WWW-Authenticate", 'Digest realm="x", nonce="n"')]))
    assert sim_sip.peek_response(resp) == (401, "z9hG4bKr1")
    assert isinstance(parse_message(resp), Response)
    assert sim_sip.peek_response(data) is None


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    vals = [float(i) for i in range(1, 101)]
    assert percentile(vals, 50) == 50.0 and percentile(vals, 99) == 99.0 and percentile(vals, 100) == 100.0


def test_retransmission_levels_then_timeout():
    loop = asyncio.new_event_loop()
    try:
        table = TxTable(loop)
        sent: list[bytes] = []
        results: list[int] = []
        table.send("b1", b"x", sent.append, lambda s, _d: results.append(s))
        t0 = table.pending["b1"].t0
        for dt in (0.49, 0.5, 1.49, 1.5, 3.5, 7.49):
            table.poll(t0 + dt)
        assert len(sent) == 4 and results == []  # sent at 0, 0.5, 1.5, 3.5
        table.poll(t0 + 7.5)
        assert results == [0] and table.timeouts == 1 and not table.pending
        table.send("b2", b"y", sent.append, lambda s, _d: results.append(s))
        assert table.complete("b2", 200, b"") and results == [0, 200]
        assert not table.complete("b2", 200, b"") and table.strays == 1
    finally:
        loop.close()


# --------------------------------------------------------------------------- end to end

def _gateway_settings(tmp: Path):
    from gateway.config import load_settings

    env = {
        "GBGATE_SIP__PORT": "0", "GBGATE_HTTP__PORT": "0", "GBGATE_DATA_DIR": str(tmp),
        "GBGATE_DATABASE__URL": f"sqlite:///{tmp}/gbgate.db",
        "GBGATE_HEALTH__JOURNAL_PATH": str(tmp / "journal" / "health.log"),
        "GBGATE_WHITELIST__SIGNING_KEY": str(tmp / "keys" / "k.pem"),
        "GBGATE_WHITELIST__SIGNING_PUB": str(tmp / "keys" / "k.pub.pem"),
    }
    return load_settings(None, env=env)


@pytest.mark.slow
def test_three_devices_register_keepalive_and_report_catalog(tmp_path):
    try:
        from gateway.app import Gateway
    except ImportError as exc:  # the composition root is still being written
        pytest.skip(f"gateway.app not importable yet: {exc}")
    from whitelist.model import Credential, Entry, EntryStatus

    async def scenario() -> None:
        settings = _gateway_settings(tmp_path)
        gw = Gateway(settings)
        await gw.start()
        swarm = None
        try:
            assert gw.services is not None
            store = gw.services.admission.store
            devices = make_devices(3, password="12345678", channels=5)
            devices.append(SimDevice("34020000001329999999", "12345678"))  # not whitelisted → 403
            for d in devices[:3]:
                await store.save_entry(Entry(device_id=d.device_id, status=EntryStatus.APPROVED,
                                             credential=Credential.from_password(d.device_id, REALM, "12345678"),
                                             max_channels=16),
                                       actor="test", action="add")
            await gw.services.admission.sync()
            swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, devices=devices)
            await swarm.start()
            reg = await asyncio.wait_for(swarm.register_all(), 20)
            assert reg["registered"] == 3 and reg["failures"] == {"403": 1}, reg
            ka = await asyncio.wait_for(swarm.run_keepalives(1.0, rate=30), 10)
            assert ka["acked"] == ka["sent"] > 0 and not ka["failures"], ka
            # The gateway queries DeviceInfo and Catalog after registration; 5 channels = 2 pages each.
            deadline = asyncio.get_running_loop().time() + 10
            while swarm.counts["queries_answered"] < 6 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert swarm.counts["queries_answered"] >= 6, swarm.stats()
            await asyncio.sleep(0.5)
            repo = gw.services.repo
            counts = await repo.channel_counts()
            assert all(counts.get(d.device_id) == 5 for d in devices[:3]), counts
            un = await asyncio.wait_for(swarm.unregister_all(), 10)
            assert un == {"attempted": 3, "unregistered": 3}
        finally:
            if swarm is not None:
                await swarm.stop()
            await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 28))



# --------------------------------------------------------------------------- media

def test_prepared_pattern_streams_valid_ps_with_monotonic_timestamps_across_the_loop():
    import socket as _socket

    from devsim import media as sim_media
    from gateway.gb.sdp import MediaTransport
    from gateway.media.ps import PsDemuxer
    from gateway.media.rtp import parse_rtp

    aus = sim_media.load_pattern("h264")
    assert len(aus) == sim_media.LOOP_FRAMES and sum(k for k, _ in aus) == sim_media.LOOP_FRAMES // sim_media.GOP
    frames = sim_media.prepare(aus[:60], "h264", tcp=False)  # a short loop: wraps after 60 frames
    rx = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 8 << 20)
    tx = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    s = sim_media.Stream("c", "ch", "h264", MediaTransport.UDP, 106000001, rx.getsockname(), 0, udp=tx,
                         frames=frames)
    for _ in range(80):
        s.send_frame()
    demux = PsDemuxer()
    out, seqs, stamps = [], [], []
    rx.settimeout(1.0)
    for _ in range(s.sent_packets):
        pkt = parse_rtp(rx.recv(65536))
        assert pkt.ssrc == 106000001 and pkt.payload_type == 96
        seqs.append(pkt.sequence)
        stamps.append(pkt.timestamp)
        out += demux.feed(bytes(pkt.payload), frame_end=pkt.marker)
    rx.close()
    tx.close()
    assert seqs == list(range(len(seqs)))
    assert stamps == sorted(stamps) and len(set(stamps)) == 80
    video = [f for f in out if f.kind == "video"]
    assert len(video) >= 79
    pts = [f.pts for f in video]
    assert all(b - a == sim_media.FRAME_TICKS for a, b in itertools.pairwise(pts))
    assert video[0].keyframe and video[50].keyframe and video[60].keyframe  # loop restarts on a keyframe
    assert video[0].data == aus[0][1] or video[0].data.endswith(aus[0][1][-64:])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["UDP", "TCP-PASSIVE", "TCP-ACTIVE"])
def test_device_answers_invite_and_streams_until_bye(mode):
    """A platform-side INVITE (our own offer builder) → 100, 200 with a GB answer → ACK → PS/RTP → BYE."""
    import socket as _socket

    from gateway.gb.sdp import MediaTransport, build_play_offer, parse_answer
    from gateway.media.ps import PsDemuxer
    from gateway.media.rfc4571 import Rfc4571Deframer
    from gateway.media.rtp import parse_rtp

    transport = MediaTransport(mode)
    dev = SimDevice(DEV, "x", [SimChannel("34020000001310000001", "cam")])

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sip = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        sip.bind(("127.0.0.1", 0))
        sip.setblocking(False)
        swarm = DeviceSwarm(server_host="127.0.0.1", server_port=sip.getsockname()[1], devices=[dev])
        await swarm.start()
        media_udp = listener = conn = None
        try:
            if transport is MediaTransport.UDP:
                media_udp = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
                media_udp.bind(("127.0.0.1", 0))
                media_udp.setblocking(False)
                port = media_udp.getsockname()[1]
            elif transport is MediaTransport.TCP_PASSIVE:
                listener = _socket.socket()
                listener.bind(("127.0.0.1", 0))
                listener.listen(1)
                listener.setblocking(False)
                port = listener.getsockname()[1]
            else:
                port = 9
            offer = build_play_offer(channel_id="34020000001310000001", media_ip="127.0.0.1", media_port=port,
                                     ssrc="0340200017", transport=transport)
            head = (f"INVITE sip:34020000001310000001@127.0.0.1:{swarm.local_port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{sip.getsockname()[1]};rport;branch=z9hG4bKinv1\r\n"
                    f"From: <sip:34020000002000000001@{REALM}>;tag=p1\r\n"
                    "To: <sip:34020000001310000001@127.0.0.1>\r\nCall-ID: inv-1@test\r\nCSeq: 21 INVITE\r\n"
                    f"Contact: <sip:34020000002000000001@127.0.0.1:{sip.getsockname()[1]}>\r\n"
                    "Subject: 34020000001310000001:0340200017,34020000002000000001:0\r\n"
                    f"Content-Type: APPLICATION/SDP\r\nContent-Length: {len(offer)}\r\n\r\n").encode()
            dest = ("127.0.0.1", swarm.local_port)
            await loop.sock_sendto(sip, head + offer, dest)
            statuses, ok = [], None
            while ok is None:
                data = await asyncio.wait_for(loop.sock_recv(sip, 65536), 15)
                resp = parse_message(data)
                assert isinstance(resp, Response)
                statuses.append(resp.status)
                if resp.status == 200:
                    ok = resp
            assert statuses[0] == 100 and ok.headers.get("Contact")
            answer = parse_answer(ok.body, transport)
            assert answer.ssrc == "0340200017" and answer.transport is transport
            ack = (f"ACK sip:34020000001310000001@127.0.0.1:{swarm.local_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{sip.getsockname()[1]};rport;branch=z9hG4bKack1\r\n"
                   f"From: <sip:34020000002000000001@{REALM}>;tag=p1\r\n"
                   f"To: {ok.headers.get('To')}\r\nCall-ID: inv-1@test\r\nCSeq: 21 ACK\r\n"
                   "Content-Length: 0\r\n\r\n").encode()
            await loop.sock_sendto(sip, ack, dest)
            packets: list[bytes] = []
            if transport is MediaTransport.UDP:
                assert media_udp is not None
                while len(packets) < 20:
                    packets.append(await asyncio.wait_for(loop.sock_recv(media_udp, 65536), 5))
            else:
                if listener is not None:
                    conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
                else:
                    conn = _socket.create_connection((answer.ip, answer.port), timeout=5)
                conn.setblocking(False)
                deframer = Rfc4571Deframer()
                while len(packets) < 20:
                    packets += deframer.feed(await asyncio.wait_for(loop.sock_recv(conn, 65536), 5))
            demux = PsDemuxer()
            frames = []
            for raw in packets:
                pkt = parse_rtp(raw)
                assert pkt.ssrc == 340200017
                frames += demux.feed(bytes(pkt.payload), frame_end=pkt.marker)
            assert frames and frames[0].keyframe and frames[0].codec.value == "h264"
            assert swarm.stats()["streams_active"] == 1
            bye = (f"BYE sip:34020000001310000001@127.0.0.1:{swarm.local_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{sip.getsockname()[1]};rport;branch=z9hG4bKbye1\r\n"
                   f"From: <sip:34020000002000000001@{REALM}>;tag=p1\r\n"
                   f"To: {ok.headers.get('To')}\r\nCall-ID: inv-1@test\r\nCSeq: 22 BYE\r\n"
                   "Content-Length: 0\r\n\r\n").encode()
            await loop.sock_sendto(sip, bye, dest)
            while True:
                resp = parse_message(await asyncio.wait_for(loop.sock_recv(sip, 65536), 5))
                if resp.cseq == (22, "BYE"):
                    break
            assert isinstance(resp, Response) and resp.status == 200
            assert swarm.stats()["streams_active"] == 0
        finally:
            await swarm.stop()
            for s_ in (sip, media_udp, listener, conn):
                if s_ is not None:
                    s_.close()

    asyncio.run(asyncio.wait_for(scenario(), 25))


def test_platform_sized_device_has_distinct_channel_ids() -> None:
    """A 5,000-channel simulated platform (bench_catalog_sync) must not wrap its IDs at 32 channels;
    the first 32 keep their old numbering, so existing scenarios see the same IDs."""
    from devsim.messages import channel_id

    dev, other = "34020000001320000001", "34020000001320000002"
    ids = [channel_id(dev, i) for i in range(5000)]
    assert len(set(ids)) == 5000 and all(len(i) == 20 and i[10:13] == "131" for i in ids)
    assert ids[:32] == [f"3402000000131{32 + k:07d}" for k in range(32)]
    assert not set(ids) & {channel_id(other, i) for i in range(5000)}
