"""What we answer an upper platform's MANSCDP request, sans-IO (gb28181.md §7.3, issue 14 boundary hygiene).

`decide(msg)` sorts a request into an answer kind or a refusal; `catalog_pages` and `share_items`
build what a Catalog answer sends. The per-direction allow-list: from outside we answer queries
about what we share; a DeviceControl carrying only a valid PTZCmd is forwarded down when the
upper's `ptz` is on; every other control (DeviceControl with TeleBoot/RecordCmd/…, DeviceConfig,
upgrade…) — and PTZ when off — is refused with 403 and reported as a security event by the shell.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from adapters.cascade import idmap
from gateway.gb import builders, ptz
from gateway.gb.errors import PtzError
from gateway.gb.ids import IdKind, kind_of
from gateway.gb.items import CatalogItem
from gateway.gb.manscdp import Manscdp
from gateway.gb.messages import Root
from gateway.media.hub import stream_key


class Answer(enum.StrEnum):
    CATALOG = "catalog"
    DEVICE_INFO = "device_info"
    DEVICE_STATUS = "device_status"
    PTZ = "ptz"  # forward the PTZCmd to the device owning the channel
    KEEPALIVE = "keepalive"  # an upper's Notify we take note of (200, nothing else)
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Decision:
    answer: Answer
    status: int = 200
    reason: str = ""  # for a refusal: the counter/audit reason
    security: bool = False  # a refusal worth an audit record (control from outside)
    ptz_cmd: str = ""


#: Children of a DeviceControl besides the envelope that a PTZ-only command may carry.
_PTZ_FIELDS = frozenset({"cmdtype", "sn", "deviceid", "ptzcmd", "info"})


def decide(msg: Manscdp, our_id: str, *, allow_ptz: bool = False) -> Decision:
    """The answer kind for one MESSAGE body from the upper (reasons carry the CmdType only when it
    is a short plain name: they become metric labels)."""
    cmd = msg.cmd_type if msg.cmd_type.isascii() and msg.cmd_type.isalnum() and len(msg.cmd_type) <= 32 \
        else "other"
    if msg.root is Root.QUERY:
        if cmd == "Catalog":
            return Decision(Answer.CATALOG)
        if cmd in ("DeviceInfo", "DeviceStatus"):
            if msg.device_id != our_id:
                return Decision(Answer.REFUSE, 404, f"query_unknown_target:{cmd}")
            return Decision(Answer.DEVICE_INFO if cmd == "DeviceInfo" else Answer.DEVICE_STATUS)
        return Decision(Answer.REFUSE, 403, f"query_unsupported:{cmd}")
    if msg.root is Root.CONTROL:
        ptz_cmd = msg.get("PTZCmd") if cmd == "DeviceControl" else None
        only_ptz = ptz_cmd is not None and all(k.lower() in _PTZ_FIELDS for k in msg.fields)
        if only_ptz and allow_ptz and ptz_cmd is not None:
            try:
                ptz.decode(ptz_cmd)
            except PtzError:
                return Decision(Answer.REFUSE, 400, "ptz_invalid")
            return Decision(Answer.PTZ, ptz_cmd=ptz_cmd.strip())
        what = "ptz" if only_ptz else cmd
        return Decision(Answer.REFUSE, 403, f"control_refused:{what}", security=True)
    if msg.root is Root.NOTIFY:
        return Decision(Answer.KEEPALIVE)
    return Decision(Answer.REFUSE, 403, f"unexpected:{msg.root.value}")


@dataclass(frozen=True, slots=True)
class Channel:
    """One admitted channel as the directory lists it: its device, and the labels a per-upper
    selection matches (the device's whitelist site, the channel contract's vendor)."""

    device_id: str
    item: CatalogItem
    site: str = ""
    vendor: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """What one upper is shown (`[[cascade]]` channels/sites/vendors): the union of the three;
    all of them empty = every admitted channel."""

    channels: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    vendors: frozenset[str] = frozenset()

    def matches(self, channel: Channel, exposed_id: str) -> bool:
        if not (self.channels or self.sites or self.vendors):
            return True
        return (channel.item.device_id in self.channels or exposed_id in self.channels
                or (bool(channel.site) and channel.site in self.sites)
                or (bool(channel.vendor) and channel.vendor in self.vendors))


@dataclass(slots=True)
class Shared:
    """One upper's view: items under their exposed IDs (sorted), and where each comes from."""

    items: list[CatalogItem]
    origin: dict[str, tuple[str, str]]  # exposed ID → (device ID, channel ID)
    shared_ids: frozenset[str] = frozenset()  # channel IDs more than one of our devices exposes

    def stream_key(self, exposed_id: str) -> str:
        """What the hub is asked for to play `exposed_id`: the channel ID, or — when another
        device has a channel of that ID too — that device's channel (hub.stream_key)."""
        origin = self.origin.get(exposed_id)
        if origin is None:
            return exposed_id
        device_id, channel_id = origin
        return stream_key(channel_id, device_id) if channel_id in self.shared_ids and device_id else channel_id

    def view(self) -> dict[str, CatalogItem]:
        return {i.device_id: i for i in self.items}


def share(channels: Iterable[Channel], our_id: str, selection: Selection = Selection()) -> Shared:
    """The channels shown to one upper: those `selection` matches, under IDs unique across our
    devices (idmap: computed over every admitted channel, so one upper's selection does not shift
    another's IDs), sorted, each re-parented to our platform ID unless its parent is itself shared
    (the upper sees one tree rooted at us, §7.3), with a civil code (ours when the device gave none)."""
    listed = list(channels)
    ids = idmap.exposed_ids((c.device_id, c.item.device_id) for c in listed)
    chosen: dict[str, Channel] = {}
    for c in sorted(listed, key=lambda c: c.device_id, reverse=True):  # a shared region: the first device's
        exposed = ids[(c.device_id, c.item.device_id)]
        if selection.matches(c, exposed):
            chosen[exposed] = c
    out = []
    origin = {}
    for exposed in sorted(chosen, key=_tree_order):
        c = chosen[exposed]
        item = c.item
        parent = ids.get((c.device_id, item.parent_id or ""), "")
        group = ids.get((c.device_id, item.business_group_id or ""), "")
        origin[exposed] = (c.device_id, item.device_id)
        node = kind_of(exposed) in _NODES
        out.append(dataclasses.replace(
            item, device_id=exposed, parent_id=parent if parent in chosen else our_id,
            parental=item.parental if item.parental is not None else int(node),
            civil_code=item.civil_code or our_id[:6], event=None,
            business_group_id=group if group in chosen else None,
        ))
    owners: dict[str, set[str]] = {}
    for (device_id, channel_id) in ids:
        owners.setdefault(channel_id, set()).add(device_id)
    return Shared(out, origin, frozenset(c for c, devices in owners.items() if len(devices) > 1))


#: Catalog nodes that are not video sources: listed before the channels, never played (§7.3 step 2).
_NODES = frozenset({IdKind.REGION, IdKind.BUSINESS_GROUP, IdKind.VIRTUAL_ORG, IdKind.PLATFORM})
_ORDER = {IdKind.REGION: 0, IdKind.PLATFORM: 1, IdKind.BUSINESS_GROUP: 2, IdKind.VIRTUAL_ORG: 3}


def _tree_order(cid: str) -> tuple[int, int, str]:
    """Regions (shortest first), platforms, business groups (215), virtual organisations (216),
    then everything else, each by ID: a parent comes before what it holds."""
    return (_ORDER.get(kind_of(cid), 4), len(cid), cid)


def is_node(cid: str) -> bool:
    """A region, platform or group ID: a catalog node, not something an upper can play."""
    return kind_of(cid) in _NODES


def platform_item(our_id: str, name: str) -> CatalogItem:
    """Our own platform item (type 200), first in a Catalog answer: the root of the upper's tree
    (§7.3 step 2); the items without a shared parent name it as their ParentID."""
    return CatalogItem(device_id=our_id, name=name, manufacturer="gbgate", model="gbgate", owner="0",
                       civil_code=our_id[:6], address="", register_way=1, secrecy=0, parental=1)


def share_items(items: Iterable[CatalogItem], our_id: str, selected: Sequence[str] = ()) -> list[CatalogItem]:
    """`share` for items of one unnamed device, selected by channel ID (all when empty)."""
    return share((Channel("", i) for i in items), our_id, Selection(channels=frozenset(selected))).items


class Change(enum.StrEnum):
    """`<Event>` of a Notify/Catalog item (§4.15, §7.4)."""

    ADD = "ADD"
    DEL = "DEL"
    ON = "ON"
    OFF = "OFF"
    UPDATE = "UPDATE"


def catalog_changes(before: Mapping[str, CatalogItem], after: Mapping[str, CatalogItem]) -> list[CatalogItem]:
    """What an upper that was shown `before` must hear to see `after`, as Notify/Catalog items in
    ID order: ADD and UPDATE carry the whole item, DEL/ON/OFF only the ID (as devices send them);
    a status flip alone is ON/OFF, any other change UPDATE (which carries the new Status)."""
    out = []
    for cid in sorted(before.keys() | after.keys()):
        old, new = before.get(cid), after.get(cid)
        if new is None:
            out.append(CatalogItem(device_id=cid, event=Change.DEL.value))
        elif old is None:
            out.append(dataclasses.replace(new, event=Change.ADD.value))
        elif dataclasses.replace(old, status=new.status) != new:
            out.append(dataclasses.replace(new, event=Change.UPDATE.value))
        elif old.status != new.status:
            out.append(CatalogItem(device_id=cid, event=(Change.ON if new.status == "ON" else Change.OFF).value))
    return out


def subscribe_ok(our_id: str, sn: int, charset: str = "GB2312") -> bytes:
    """The body of our 200 to a Catalog SUBSCRIBE: Response/Catalog with Result OK (as WVP)."""
    return builders.build_response_result("Catalog", sn, our_id, "OK", charset)


def catalog_notify(our_id: str, sn: int, items: Sequence[CatalogItem], charset: str = "GB2312") -> bytes:
    return builders.build_catalog_notify(our_id, sn, items, charset)


def catalog_pages(our_id: str, sn: int, items: Sequence[CatalogItem], per_message: int = 1,
                  charset: str = "GB2312") -> list[bytes]:
    """Response/Catalog bodies: the upper's SN, our ID, SumNum = all items, `per_message` items in
    each (one page with `Num="0"` when nothing is shared, §7.3 step 4)."""
    step = max(1, per_message)
    total = len(items)
    if not total:
        return [builders.build_catalog_response(our_id, sn, 0, [], charset)]
    return [builders.build_catalog_response(our_id, sn, total, items[i:i + step], charset)
            for i in range(0, total, step)]


def device_info(our_id: str, sn: int, *, name: str, channels: int, firmware: str, charset: str = "GB2312") -> bytes:
    return builders.build_device_info_response(
        our_id, sn, name=name, manufacturer="gbgate", model="gbgate", firmware=firmware,
        channel_count=channels, device_type="Platform", charset=charset,
    )


def device_status(our_id: str, sn: int, *, device_time: str, charset: str = "GB2312") -> bytes:
    return builders.build_device_status_response(our_id, sn, online=True, status="OK", device_time=device_time,
                                                 charset=charset)
