"""GB SDP (§5.3–5.6): vectors, byte-exact round trips, play builders, answer reading."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gb.errors import GbError, SdpError
from gateway.gb.sdp import (
    MediaTransport,
    build_play_answer,
    build_play_offer,
    parse_answer,
    parse_offer,
    parse_sdp,
)

DATA = Path(__file__).parents[2] / "data" / "sdp"
CRLF_VECTORS = sorted(
    p.name for p in DATA.glob("*.sdp") if p.name.startswith(("offer_", "answer_")) and b"\r\n" in p.read_bytes()
)
CH = "44010600001310000003"


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("name", CRLF_VECTORS)
def test_byte_exact_round_trip(name):
    body = raw(name)
    assert parse_sdp(body).serialize() == body
    assert parse_sdp(body.decode()).serialize() == body


def test_lf_body_keeps_every_line_and_gains_crlf():
    body = raw("answer_lf_no_ssrc.sdp")
    sdp = parse_sdp(body)
    assert sdp.serialize() == body.replace(b"\n", b"\r\n")
    assert "k=unknown" in sdp.lines and "a=x-vendor:hik" in sdp.lines
    assert sdp.lines[3] == "c=IN IP4 192.168.1.108 "  # trailing space preserved


def test_accessors_on_wvp_offer():
    sdp = parse_sdp(raw("offer_play_udp.sdp"))
    assert sdp.session_name == "Play"
    assert sdp.connection_address == "192.168.1.10"
    assert sdp.ssrc == "0106000001"
    assert sdp.f is None
    assert sdp.setup is None
    assert sdp.direction == "recvonly"
    assert sdp.timing == (0, 0)
    assert sdp.rtpmap == {96: "PS/90000", 97: "MPEG4/90000", 98: "H264/90000", 99: "H265/90000"}
    [video] = sdp.media
    assert (video.kind, video.port, video.proto, video.formats) == ("video", 30120, "RTP/AVP", ["96", "97", "98", "99"])
    assert video.attributes[0] == ("recvonly", None)
    assert video.attributes[1] == ("rtpmap", "96 PS/90000")
    assert not video.is_tcp


def test_accessors_on_senior_offer_with_f_line():
    sdp = parse_sdp(raw("offer_play_senior_wvp.sdp"))
    assert sdp.f == "v/2/5/25/1/4096a/1/8/1"
    assert sdp.rtpmap[126] == "H264/90000" and sdp.rtpmap[125] == "H264S/90000"
    assert sdp.media[0].formats[:3] == ["96", "126", "125"]
    assert sdp.setup == "passive"


def test_empty_f_line_is_empty_string():
    assert parse_sdp(raw("answer_play_udp.sdp")).f == ""


def test_builder_reproduces_notes_offer_exactly():
    body = build_play_offer(
        channel_id=CH, media_ip="192.168.1.10", media_port=30120, ssrc="0106000001", transport=MediaTransport.UDP
    )
    assert body == raw("offer_play_udp.sdp")


def test_builder_reproduces_playback_tcp_passive_offer():
    body = build_play_offer(
        channel_id=CH,
        media_ip="192.168.1.10",
        media_port=30122,
        ssrc="1106000002",
        transport=MediaTransport.TCP_PASSIVE,
        session="Playback",
        start=1717200000,
        stop=1717203600,
    )
    assert body == raw("offer_playback_tcp_passive.sdp")


def test_builder_download_and_tcp_active_with_stream_number():
    body = build_play_offer(
        channel_id=CH,
        media_ip="192.168.1.10",
        media_port=30124,
        ssrc="1106000003",
        transport=MediaTransport.TCP_PASSIVE,
        session="Download",
        start=1717200000,
        stop=1717203600,
        download_speed=4,
    )
    assert body == raw("offer_download_tcp_passive.sdp")
    body = build_play_offer(
        channel_id=CH,
        media_ip="192.168.1.10",
        media_port=30126,
        ssrc="0106000004",
        transport=MediaTransport.TCP_ACTIVE,
        stream_number=1,
    )
    assert body == raw("offer_play_tcp_active.sdp")


@pytest.mark.parametrize(
    ("name", "transport", "port", "ssrc", "setup"),
    [
        ("offer_play_udp.sdp", MediaTransport.UDP, 30120, "0106000001", None),
        ("offer_playback_tcp_passive.sdp", MediaTransport.TCP_PASSIVE, 30122, "1106000002", "passive"),
        ("offer_play_tcp_active.sdp", MediaTransport.TCP_ACTIVE, 30126, "0106000004", "active"),
    ],
)
def test_parse_offer(name, transport, port, ssrc, setup):
    offer = parse_offer(raw(name))
    assert (offer.ip, offer.port, offer.transport, offer.ssrc, offer.setup) == (
        "192.168.1.10",
        port,
        transport,
        ssrc,
        setup,
    )


def test_parse_offer_history_fields():
    offer = parse_offer(raw("offer_download_tcp_passive.sdp"))
    assert offer.session_name == "Download"
    assert offer.channel_id == CH
    assert (offer.start, offer.stop) == (1717200000, 1717203600)
    assert offer.download_speed == 4
    assert parse_offer(raw("offer_play_tcp_active.sdp")).stream_number == 1


def test_parse_answer_udp():
    ans = parse_answer(raw("answer_play_udp.sdp"))
    assert (ans.ip, ans.port, ans.transport, ans.ssrc, ans.setup) == (
        "192.168.1.64",
        15060,
        MediaTransport.UDP,
        "0106000001",
        None,
    )


def test_parse_answer_tcp_roles():
    passive = parse_answer(raw("answer_tcp_passive_device_active.sdp"))
    assert passive.transport is MediaTransport.TCP_PASSIVE and passive.setup == "active"
    assert passive.filesize == 0
    active = parse_answer(raw("answer_tcp_active_device_passive.sdp"))
    assert active.transport is MediaTransport.TCP_ACTIVE and active.setup == "passive"
    assert (active.ip, active.port) == ("192.168.1.64", 15062)  # where the platform connects


def test_answer_ssrc_wins_and_media_level_connection():
    ans = parse_answer(raw("answer_other_ssrc_media_c.sdp"))
    assert ans.ssrc == "0200000777"
    assert ans.ip == "10.0.0.6"


def test_answer_without_y_means_any_ssrc():
    ans = parse_answer(raw("answer_lf_no_ssrc.sdp"))
    assert ans.ssrc is None and ans.ip == "192.168.1.108" and ans.port == 62000


def test_udp_answer_to_tcp_offer_is_reported_as_udp():
    ans = parse_answer(raw("answer_udp_to_tcp_offer.sdp"), offered=MediaTransport.TCP_PASSIVE)
    assert ans.transport is MediaTransport.UDP


def test_tcp_answer_without_setup_keeps_offered_mode():
    body = raw("answer_tcp_active_device_passive.sdp").replace(b"a=setup:passive\r\n", b"")
    assert parse_answer(body, offered=MediaTransport.TCP_ACTIVE).transport is MediaTransport.TCP_ACTIVE
    assert parse_answer(body).transport is MediaTransport.TCP_PASSIVE


@pytest.mark.parametrize("transport", list(MediaTransport))
def test_answer_builder_reverses_setup_and_reads_back(transport):
    body = build_play_answer(
        channel_id=CH, media_ip="192.168.1.64", media_port=15060, ssrc="0106000001", transport=transport
    )
    sdp = parse_sdp(body)
    assert sdp.direction == "sendonly"
    assert sdp.rtpmap == {96: "PS/90000"}
    assert sdp.f == ""
    expected_setup = {
        MediaTransport.UDP: None,
        MediaTransport.TCP_PASSIVE: "active",
        MediaTransport.TCP_ACTIVE: "passive",
    }[transport]
    assert sdp.setup == expected_setup
    ans = parse_answer(body)
    assert (ans.transport, ans.ip, ans.port, ans.ssrc) == (transport, "192.168.1.64", 15060, "0106000001")


def test_offer_answer_pair_agree_on_transport():
    for transport in MediaTransport:
        offer = parse_offer(
            build_play_offer(
                channel_id=CH, media_ip="10.0.0.1", media_port=30000, ssrc="0000000001", transport=transport
            )
        )
        assert offer.transport is transport
        answer = parse_answer(
            build_play_answer(
                channel_id=CH, media_ip="10.0.0.2", media_port=40000, ssrc=offer.ssrc or "", transport=offer.transport
            )
        )
        assert answer.transport is transport


def test_ipv6_connection_line():
    body = build_play_offer(channel_id=CH, media_ip="fd00::1", media_port=1, ssrc="1", transport=MediaTransport.UDP)
    assert b"c=IN IP6 fd00::1\r\n" in body
    assert parse_offer(body).ip == "fd00::1"


def test_set_value_and_without_gb_lines():
    sdp = parse_sdp(raw("answer_play_udp.sdp"))
    sdp.set_value("y", "0100000009")
    sdp.set_value("c", "IN IP4 10.1.1.1")
    assert sdp.ssrc == "0100000009" and sdp.connection_address == "10.1.1.1"
    plain = sdp.without_gb_lines()
    assert b"y=" not in plain and b"f=" not in plain and b"m=video 15060" in plain


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (raw("not_sdp.txt"), "not an SDP"),
        (raw("bad_port.sdp"), "bad port"),
        (b"v=0\r\nm=video\r\n", "m= line needs"),
    ],
)
def test_invalid_sdp_raises_sdp_error(body, needle):
    with pytest.raises(SdpError, match=needle):
        parse_sdp(body)


def test_answer_errors():
    with pytest.raises(SdpError, match="no c= address"):
        parse_answer(raw("no_connection.sdp"))
    with pytest.raises(SdpError, match="no m= line"):
        parse_answer(b"v=0\r\ns=Play\r\nc=IN IP4 1.2.3.4\r\n")
    with pytest.raises(SdpError):
        parse_sdp(b"v=0\r\n" + b"a=x\r\n" * 20000)


def test_builder_validation():
    with pytest.raises(SdpError):
        build_play_offer(channel_id=CH, media_ip="1.2.3.4", media_port=1, ssrc="12ab", transport=MediaTransport.UDP)
    with pytest.raises(SdpError):
        build_play_answer(channel_id=CH, media_ip="1.2.3.4", media_port=70000, ssrc="1", transport=MediaTransport.UDP)
    assert isinstance(SdpError("x"), GbError)


_line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30)


@given(st.lists(_line, max_size=20), st.integers(0, 65535))
def test_any_lines_round_trip_or_sdp_error(lines, port):
    body = "\r\n".join(["v=0", *lines, f"m=video {port} RTP/AVP 96"]) + "\r\n"
    try:
        sdp = parse_sdp(body.encode())
    except SdpError:
        return
    assert sdp.serialize() == body.encode()
    assert sdp.media[-1].port == port


@given(st.binary(max_size=300))
def test_binary_garbage_only_sdp_error(data):
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    assert isinstance(sdp.serialize(), bytes)
    try:
        parse_answer(data)
    except SdpError:
        pass
