"""Channel IDs the upper sees, unique even when two of our devices reuse one (gb28181.md §7.3).

Factory channel IDs collide (two NVRs both numbering from …1310000001). The upper keys channels
by ID alone, so each (device, channel) gets one exposed ID: the channel's own ID for the device
that sorts first, and for every other device a mapped ID that keeps the first 14 digits (centre
code, industry, type, network: the same kind of thing) and takes the serial (digits 15–20) from a
hash of device and channel, probing upwards past IDs already in use. Pure and deterministic: the
same set of channels maps the same way after a restart, whatever order it is listed in.
An ID that is not 20 digits (a region node, "3402") is never mapped: the same region under two
devices is one region.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

_SERIALS = 1_000_000


def exposed_ids(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(device ID, channel ID) → the ID shown upward, one distinct ID per pair."""
    owners: dict[str, set[str]] = {}
    for device_id, channel_id in pairs:
        owners.setdefault(channel_id, set()).add(device_id)
    taken = set(owners)
    out: dict[tuple[str, str], str] = {}
    for channel_id in sorted(owners):
        first, *later = sorted(owners[channel_id])
        out[(first, channel_id)] = channel_id
        if not _valid(channel_id):
            out.update(((device_id, channel_id), channel_id) for device_id in later)
            continue
        for device_id in later:
            mapped = mapped_id(device_id, channel_id, taken)
            taken.add(mapped)
            out[(device_id, channel_id)] = mapped
    return out


def mapped_id(device_id: str, channel_id: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A 20-digit ID of the channel's kind (its first 14 digits) with a serial derived from
    device and channel, not in `taken`."""
    prefix = channel_id[:14] if _valid(channel_id) else "00000000001310"
    digest = hashlib.sha256(f"{device_id}/{channel_id}".encode()).digest()
    serial = int.from_bytes(digest[:8], "big") % _SERIALS
    for _ in range(_SERIALS):
        candidate = f"{prefix}{serial:06d}"
        if candidate not in taken and candidate != channel_id:
            return candidate
        serial = (serial + 1) % _SERIALS
    raise ValueError(f"no free serial left under {prefix}")


def _valid(value: str) -> bool:
    return len(value) == 20 and value.isascii() and value.isdigit()
