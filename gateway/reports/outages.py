"""Faults as tickets and notices count them: one per channel, but one per lower-platform outage. Pure.

When a lower platform (GB/T 28181 type 200, e.g. a station operator's system with 244 cameras)
drops, every channel behind it goes `offline` with cause `platform_offline` (issue 14 #2). That is
one fault of one thing — the platform or its link — so the station gets ONE ticket and ONE notice
row naming the channels it took down, not 244. Per-channel availability and deductions still
count each channel's downtime (it was real unavailability); only the ticket/notice view groups.

How a channel's notice episode (see `notice_episodes`) is divided:

* an episode that STARTS with cause `platform_offline` is the platform's from its start until the
  first fault interval with another cause (an `offline catalog_off` once the platform is back and
  no longer lists the channel, a `no_video`, ...); that remainder is the channel's own fault, a new
  episode from there, ticketed as usual;
* an episode that started with the channel's own cause (it was already faulty before the outage)
  stays the channel's, whole: its ticket keeps running through the outage;
* `silent_after_restart` continues a platform part: after a gateway restart the platform's
  channels are offline because the platform is still silent, not each on its own.

The platform's parts of all its channels that overlap merge into one `Fault` whose subject is the
platform's device ID (a ticket's `channel_id` then holds that ID; it is 20 digits like a channel's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from gateway.health.timeline import FAULT_STATES, State
from gateway.reports.ledger import REREGISTRATION_BRIDGE_MS, Episode, Ledger, clip, episodes
from gateway.reports.model import ChannelInfo, ContractData

#: gateway.gb.presence.PLATFORM_OFFLINE (reports do not import the SIP side)
PLATFORM_OFFLINE = "platform_offline"
#: gateway.health.recorder.CAUSE_SILENT_AFTER_RESTART: still silent after a restart
_CONTINUES = frozenset({PLATFORM_OFFLINE, "silent_after_restart"})
_FAULTS = frozenset(FAULT_STATES)


@dataclass(slots=True, frozen=True)
class Fault:
    """One fault a ticket and a notice row are about. `subject` is a channel ID, or a platform's
    device ID when `channels` (the channels the outage took down, sorted) is not empty."""

    subject: str
    episode: Episode
    channels: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class Faults:
    """Every fault of a ledger, and each channel's platform parts (to recover a ticket that was
    opened per channel for a platform outage before outages were grouped)."""

    items: tuple[Fault, ...]
    platform_parts: dict[str, list[Episode]]

    def by_subject(self) -> dict[str, list[Episode]]:
        out: dict[str, list[Episode]] = defaultdict(list)
        for f in self.items:
            out[f.subject].append(f.episode)
        return out


def notice_episodes(ledger: Ledger, channel_id: str) -> list[Episode]:
    """Faults as a station sees them: gaps of unknown/maintenance bridged, so `since` is real."""
    return episodes(
        channel_id,
        ledger.intervals[channel_id],
        bridge_gaps=True,
        bridge_reregistration_ms=REREGISTRATION_BRIDGE_MS,
        ledger_end=ledger.period.end,
    )


def split_platform_part(ledger: Ledger, ep: Episode) -> tuple[Episode | None, list[Episode]]:
    """(the platform's part of `ep` or None, the channel's own episodes) — see the module doc."""
    if ep.cause != PLATFORM_OFFLINE:
        return None, [ep]
    part = clip(ledger.intervals[ep.channel_id], ep.start, ep.end)
    cut = next((iv.start for iv in part if iv.state in _FAULTS and iv.cause not in _CONTINUES), None)
    mine = [iv for iv in part if iv.state in _FAULTS and (cut is None or iv.end <= cut)]
    end = mine[-1].end
    ms = sum(round(iv.end * 1000) - round(iv.start * 1000) for iv in mine)
    plat = Episode(ep.channel_id, ep.start, end, State.offline, PLATFORM_OFFLINE, ms, ep.ongoing and cut is None)
    if cut is None:
        return plat, []
    own = episodes(
        ep.channel_id,
        clip(part, cut, ep.end),
        bridge_gaps=True,
        bridge_reregistration_ms=REREGISTRATION_BRIDGE_MS,
        ledger_end=ledger.period.end,
    )
    return plat, own


def faults_of(ledger: Ledger, contract: ContractData) -> Faults:
    """Channel faults in contract order, then platform outages by (start, platform ID)."""
    items: list[Fault] = []
    parts: dict[str, list[Episode]] = {}
    by_platform: dict[str, list[Episode]] = defaultdict(list)
    for ch in contract.channels:
        for ep in notice_episodes(ledger, ch.channel_id):
            plat, own = split_platform_part(ledger, ep)
            if plat is not None:
                parts.setdefault(ch.channel_id, []).append(plat)
                # a channel with no device on record cannot be grouped: it stays its own fault
                if ch.device_id:
                    by_platform[ch.device_id].append(plat)
                else:
                    own = [plat, *own]
            items.extend(Fault(ch.channel_id, e) for e in own)
    outages: list[Fault] = []
    for platform_id, eps in by_platform.items():
        outages.extend(_merge(platform_id, eps))
    outages.sort(key=lambda f: (f.episode.start, f.subject))
    return Faults(tuple(items + outages), parts)


def _merge(platform_id: str, eps: list[Episode]) -> list[Fault]:
    """Overlapping (or touching) platform parts of several channels are one outage."""
    out: list[Fault] = []
    group: list[Episode] = []
    for ep in sorted(eps, key=lambda e: (e.start, e.channel_id)):
        if group and ep.start > max(g.end for g in group):
            out.append(_outage(platform_id, group))
            group = []
        group.append(ep)
    if group:
        out.append(_outage(platform_id, group))
    return out


def _outage(platform_id: str, group: list[Episode]) -> Fault:
    start, end = min(g.start for g in group), max(g.end for g in group)
    ep = Episode(
        platform_id,
        start,
        end,
        State.offline,
        PLATFORM_OFFLINE,
        max(g.fault_ms for g in group),
        any(g.ongoing for g in group),
    )
    return Fault(platform_id, ep, tuple(sorted({g.channel_id for g in group})))


def id_ranges(ids: list[str] | tuple[str, ...]) -> str:
    """Channel IDs as consecutive runs: "…0001-…0003,…0007" (sorted, numeric runs joined)."""
    out: list[str] = []
    run: list[str] = []
    for cid in sorted(set(ids)):
        if run and cid.isdigit() and run[-1].isdigit() and len(cid) == len(run[-1]) and int(cid) == int(run[-1]) + 1:
            run.append(cid)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [cid]
    if run:
        out.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def responsible(fault: Fault, contract: ContractData) -> tuple[str, str]:
    """(vendor, station) a fault's ticket goes to: the channel's; for a platform outage the one
    most of its channels have (ties: the smallest ID), so the outage is not sent twice."""
    info = {c.channel_id: c for c in contract.channels}
    chans = [info[c] for c in (fault.channels or (fault.subject,)) if c in info]

    def most(values: list[str]) -> str:
        counts: dict[str, int] = defaultdict(int)
        for v in values:
            counts[v] += 1
        return min(counts, key=lambda v: (-counts[v], v)) if counts else ""

    return most([c.vendor for c in chans if c.vendor]), most([c.station for c in chans if c.station])


def row_fields(f: Fault, contract: ContractData, info: dict[str, ChannelInfo]) -> dict[str, str]:
    """The descriptive columns of a fault's row: its channel's, or for a platform outage the
    platform's ID with the channels it took down as ID ranges in `name` (site/link when shared)."""
    if not f.channels:
        ch = info[f.subject]
        return {
            "station": ch.station,
            "channel_id": ch.channel_id,
            "name": ch.name,
            "site": ch.site,
            "owner": ch.owner,
            "link": ch.link,
            "vendor": ch.vendor,
        }
    vendor, station = responsible(f, contract)
    chans = [info[c] for c in f.channels if c in info]

    def shared(values: set[str]) -> str:
        return values.pop() if len(values) == 1 else ""

    return {
        "station": station,
        "channel_id": f.subject,
        "name": id_ranges(f.channels),
        "site": shared({c.site for c in chans}),
        "owner": shared({c.owner for c in chans}),
        "link": shared({c.link for c in chans}),
        "vendor": vendor,
    }
