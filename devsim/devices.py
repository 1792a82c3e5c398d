"""Values of the device swarm: simulated devices, their protocol state, per-run counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devsim import messages
from devsim.net import SipStreamProtocol
from gateway.gb.items import CatalogItem


@dataclass(frozen=True, slots=True)
class SimChannel:
    """One channel of a simulated device: its 20-digit ID and display name."""

    id: str
    name: str


@dataclass(slots=True)
class SimDevice:
    """A simulated GB/T 28181 device (IPC with one channel, or NVR with several)."""

    device_id: str
    password: str
    channels: list[Any] = field(default_factory=list)  # SimChannel, CatalogItem or (id, name)
    manufacturer: str = "gbgate-sim"
    model: str = "SIM-IPC"
    firmware: str = "V1.0.0"
    codec: str = "h264"  # "h264" | "h265"
    name: str | None = None


def make_devices(count: int, *, password: str, prefix: str = "3402000000132", start: int = 1,
                 channels: int = 1, h265_every: int = 0) -> list[SimDevice]:
    """`count` devices `prefix` + serial (20 digits), each with `channels` camera channels."""
    width = 20 - len(prefix)
    out = []
    for n in range(start, start + count):
        dev_id = f"{prefix}{n:0{width}d}"
        chans = [SimChannel(messages.channel_id(dev_id, k), f"Sim camera {n}-{k + 1}") for k in range(channels)]
        codec = "h265" if h265_every and (n - start) % h265_every == h265_every - 1 else "h264"
        out.append(SimDevice(dev_id, password, chans, model="SIM-NVR" if channels > 1 else "SIM-IPC",
                             codec=codec, name=f"sim-{n}"))
    return out


class DevState:
    """Per-device protocol state kept by the swarm (the SimDevice itself stays a plain value)."""

    __slots__ = ("call_id", "conn", "cseq", "dev", "items", "ka_sn", "local", "registered", "sock",
                 "tag")

    def __init__(self, dev: SimDevice, local: messages.Local, sock: int) -> None:
        self.dev = dev
        self.local = local
        self.sock = sock
        self.tag = messages.new_tag()
        self.call_id = ""
        self.cseq = 0
        self.ka_sn = 0
        self.registered = False
        self.conn: SipStreamProtocol | None = None
        self.items: list[CatalogItem] | None = None


@dataclass(slots=True)
class KeepaliveRun:
    """Counters of one run_keepalives() call."""

    sent: int = 0
    acked: int = 0
    answered: int = 0
    last_ack: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    lat: list[float] = field(default_factory=list)
