"""RTP latching (issue 10.13) and re-latching a source that moved (issue 12.1), attacker first."""

from __future__ import annotations

import ipaddress
import mmap

from gateway.media.frames import MediaFrame
from gateway.media.receiver import RtpSession
from gateway.media.session_stats import Trace
from load_tests.bench_media import PsRtpSender

SSRC = 106000001
CAMERA = ("10.1.1.5", 4000)


class Sink:
    def __init__(self) -> None:
        self.frames: list[MediaFrame] = []
        self.sources: list[str] = []

    def push(self, frame: MediaFrame) -> None:
        self.frames.append(frame)

    def new_source(self, reason: str) -> None:
        self.sources.append(reason)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def packets(n_frames: int, ssrc: int = SSRC, start_ts: int = 0) -> list[bytes]:
    s = PsRtpSender(ssrc=ssrc, start_ts=start_ts)
    out: list[bytes] = []
    for _ in range(n_frames):
        out += s.next_frame()
    return out


def session(sink: Sink, clock: Clock, **kw: object) -> RtpSession:
    return RtpSession(sink, ssrc=SSRC, allowed_hosts=[CAMERA[0]], trace=Trace(), clock=clock,
                      armed=False, **kw)  # type: ignore[arg-type]


def test_stray_sender_before_the_offer_cannot_latch() -> None:
    """A lower platform's un-BYEd stream (right host, right SSRC) already hits the port when the
    session is created: before the offer is sent it is dropped and latches nothing, so the real
    camera's RTP after the offer is what viewers get (today it was `dropped_wrong_source`)."""
    sink, clock = Sink(), Clock()
    s = session(sink, clock)
    stray = packets(10, start_ts=5_000_000)
    for p in stray:
        s.feed(p, (CAMERA[0], 6666))
    assert s.source is None and sink.frames == []
    assert s.counters["dropped_before_offer"] == len(stray)
    s.arm()
    for p in packets(10):
        s.feed(p, CAMERA)
    assert s.source == CAMERA and len(sink.frames) >= 5
    assert s.counters["dropped_wrong_source"] == 0 and s.stats()["dropped_before_offer"] == len(stray)


def test_wrong_host_with_the_right_ssrc_is_dropped_even_first() -> None:
    """The attacker sends first, from a host that is neither the device's nor whitelisted."""
    sink, clock = Sink(), Clock()
    s = session(sink, clock)
    s.arm()
    for p in packets(10):
        s.feed(p, ("10.1.1.66", 4000))
    assert s.source is None and sink.frames == [] and s.counters["dropped_wrong_source"] > 0
    assert s.trace is not None and s.trace.has("dropped_wrong_source")


def test_whitelisted_source_network_may_send() -> None:
    """The device signals from 10.1.1.5 but its encoder sends from 10.1.2.7, inside its whitelist
    entry's allowed_sources 10.1.2.0/24; 10.1.3.7 is outside."""
    sink, clock = Sink(), Clock()
    s = session(sink, clock, allowed_nets=[ipaddress.ip_network("10.1.2.0/24")])
    s.arm()
    assert s.host_allowed("10.1.2.7") and not s.host_allowed("10.1.3.7") and not s.host_allowed("bogus")
    for p in packets(5):
        s.feed(p, ("10.1.3.7", 4000))
    assert s.source is None
    for p in packets(5):
        s.feed(p, ("10.1.2.7", 4000))
    assert s.source == ("10.1.2.7", 4000) and sink.frames


def test_camera_rebooted_onto_a_new_port_is_relatched_after_silence() -> None:
    """Same host, same SSRC, new port: refused while the old source is alive (< 0.5 s silent),
    taken over once it has been silent 0.5 s; the sink hears of the new source once."""
    sink, clock = Sink(), Clock()
    s = session(sink, clock)
    s.arm()
    for p in packets(10):
        s.feed(p, CAMERA)
    before = len(sink.frames)
    moved = (CAMERA[0], 4100)
    rebooted = packets(10, start_ts=777)
    clock.now += 0.4
    s.feed(rebooted[0], moved)
    assert s.source == CAMERA and s.counters["dropped_wrong_source"] == 1 and sink.sources == []
    clock.now += 0.1
    for p in rebooted:
        s.feed(p, moved)
    assert s.source == moved and sink.sources == ["new_port"]
    assert len(sink.frames) > before and sink.frames[before].keyframe
    assert s.stats()["relatched"] == 1
    for p in packets(3):  # the old port again: it is the stranger now
        s.feed(p, CAMERA)
    assert s.source == moved


def test_ssrc_switch_from_the_latched_address_is_relatched_after_silence() -> None:
    sink, clock = Sink(), Clock()
    s = session(sink, clock)
    s.arm()
    for p in packets(10):
        s.feed(p, CAMERA)
    switched = packets(10, ssrc=SSRC + 5, start_ts=123)
    s.feed(switched[0], CAMERA)  # not silent yet: a wrong SSRC
    assert s.counters["dropped_wrong_ssrc"] == 1 and s.expected_ssrc == SSRC
    clock.now += 0.6
    n = len(sink.frames)
    for p in switched:
        s.feed(p, CAMERA)
    assert s.expected_ssrc == SSRC + 5 and sink.sources == ["ssrc_switch"] and len(sink.frames) > n


def test_other_host_never_relatches_even_after_silence() -> None:
    sink, clock = Sink(), Clock()
    s = session(sink, clock)
    s.arm()
    for p in packets(5):
        s.feed(p, CAMERA)
    clock.now += 10
    for p in packets(5):
        s.feed(p, ("10.1.1.66", 4000))
    assert s.source == CAMERA and sink.sources == []


def feed_batch(s: RtpSession, batch: list[bytes], source: tuple[str, int]) -> None:
    """What UdpReceiver hands over for a batch read from one source."""
    step = 2048
    buf = mmap.mmap(-1, step * len(batch))  # as UdpReceiver hands over: the reader's mapping
    for i, p in enumerate(batch):
        buf[i * step:i * step + len(p)] = p
    s.feed_many(buf, step, [len(p) for p in batch], source)


def test_relatching_inside_a_batch_is_what_feed_does() -> None:
    """The camera's new port and an SSRC switch, each arriving as one batch whose first packet
    re-latches (the general path) and whose rest then takes the batch's fast path."""
    runs = []
    for batched in (False, True):
        sink, clock = Sink(), Clock()
        s = RtpSession(sink, ssrc=SSRC, allowed_hosts=[CAMERA[0]], trace=Trace(clock=clock), clock=clock)
        moved = (CAMERA[0], 4100)
        steps = [(packets(10), CAMERA, 0.0), (packets(3), moved, 0.4), (packets(10, start_ts=777), moved, 0.2),
                 (packets(5), CAMERA, 0.0), (packets(10, ssrc=SSRC + 5, start_ts=99), moved, 0.7)]
        for batch, src, wait in steps:
            clock.now += wait
            if batched:
                feed_batch(s, batch, src)
            else:
                for p in batch:
                    s.feed(p, src)
        s.flush()
        runs.append((s.stats(), sink.frames, sink.sources, s.trace.steps if s.trace else None))
    assert runs[0] == runs[1]
    stats, frames, sources, _steps = runs[1]
    assert sources == ["new_port", "ssrc_switch"] and stats["relatched"] == 2 and frames
    assert stats["dropped_wrong_source"] > 0
