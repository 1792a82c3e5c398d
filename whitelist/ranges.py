"""A lower platform's allowed channel IDs on its whitelist entry (issue 14 #2): parse, print, test.

A station operator's platform (type 200) is admitted for ITS cameras: `channel_ranges` names them
as inclusive ranges of 20-digit IDs ("lo-hi") or single IDs. Catalog items outside are not stored
and a play for one is refused (adapters/gb_device/catalog_sync.py, adapters/gb_media.py).
"""

from __future__ import annotations

import re

from whitelist.errors import ValidationError

_DEVICE_ID = re.compile(r"[0-9]{20}")

#: A lower platform's allowed channel IDs: inclusive (lo, hi) pairs of 20-digit IDs (issue 14 #2).
ChannelRanges = tuple[tuple[str, str], ...]
MAX_CHANNEL_RANGES = 1000
_RANGE_SPLIT = re.compile(r"[,;\s]+")


def parse_channel_ranges(value: object, *, field: str = "channel_ranges", line: int | None = None) -> ChannelRanges:
    """`"lo-hi,id,..."` (also `;` or whitespace between items) or a list of such items → sorted
    (lo, hi) pairs; a single ID is (id, id). Empty/None → () = no restriction. Each end is 20
    ASCII digits and lo <= hi; at most MAX_CHANNEL_RANGES items."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = [x for x in _RANGE_SPLIT.split(value.strip()) if x]
    elif isinstance(value, list | tuple):
        items = []
        for x in value:
            if isinstance(x, list | tuple) and len(x) == 2:
                x = f"{x[0]}-{x[1]}"
            if not isinstance(x, str):
                raise ValidationError(field, "must be a string like lo-hi,id or a list of such strings", line=line)
            items.extend(y for y in _RANGE_SPLIT.split(x.strip()) if y)
    else:
        raise ValidationError(field, "must be a string like lo-hi,id or a list of such strings", line=line)
    if len(items) > MAX_CHANNEL_RANGES:
        raise ValidationError(field, f"more than {MAX_CHANNEL_RANGES} ranges", line=line)
    out: set[tuple[str, str]] = set()
    for item in items:
        lo, sep, hi = item.partition("-")
        if not sep:
            hi = lo
        if not (_DEVICE_ID.fullmatch(lo) and _DEVICE_ID.fullmatch(hi)):
            raise ValidationError(field, f"{item[:45]!r}: each end must be exactly 20 digits", line=line)
        if lo > hi:
            raise ValidationError(field, f"{item}: the range starts after it ends", line=line)
        out.add((lo, hi))
    return tuple(sorted(out))


def format_channel_ranges(ranges: ChannelRanges) -> str:
    """Inverse of parse_channel_ranges: "lo-hi,id" ("" = no restriction)."""
    return ",".join(lo if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def in_channel_ranges(ranges: ChannelRanges, channel_id: str) -> bool:
    """Whether `channel_id` is allowed: no ranges allow any; else it lies in one (IDs are
    equal-length digit strings, so text order is numeric order)."""
    return not ranges or any(lo <= channel_id <= hi for lo, hi in ranges)
