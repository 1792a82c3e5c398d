"""The admission decision: pure, in memory, no I/O, `now` passed in.

Order of evaluation for `Policy.decide(request, now)`:

1. An exact entry for the device ID that is not `pending` decides alone ("exact entries beat
   rules"): revoked → REVOKED, suspended → SUSPENDED, outside [not_before, not_after) →
   NOT_YET_VALID / EXPIRED, source outside allowed_sources → SOURCE_NOT_ALLOWED, pinned certificate
   not presented (except for RTP, which carries none) → CERT_MISMATCH, declared make/model/firmware
   contradicting the expectation → MODEL_MISMATCH, else APPROVED with the entry's credential.
2. Otherwise the range rules: active (`approved`) rules whose ID prefix/type code and source match,
   lowest priority value first, then most specific, then rule id; first match wins: allow →
   RULE_ALLOW with the rule's shared credential, deny → RULE_DENY. A `pending` entry is only a record
   of what we saw, not a decision, so it does not shadow rules; without an allowing rule it answers
   PENDING.
3. Explicit default deny: UNKNOWN_DEVICE (or SOURCE_NOT_ALLOWED when an allow rule matched the ID
   but not the source).

`Decision.credential` is what the digest must be verified against. When an allowed decision carries
no credential, the caller must use its configured default password, and refuse when it has none.
LOCKED_ID, LOCKED_SOURCE and FLOOD come from whitelist.lockout, which the caller asks first.
Reasons are for logs and audit only: answers to the device must not reveal them (enumeration).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Final

from whitelist.model import Credential, Entry, EntryStatus, IPNetwork, Rule, RuleAction

_ADDR_CACHE_MAX = 65536
_MEMO_MAX = 200_000  # memoized plain decisions (one per device and source in a steady swarm)


class RequestKind(StrEnum):
    REGISTER = "REGISTER"
    MESSAGE = "MESSAGE"
    INVITE = "INVITE"
    RTP = "RTP"
    OTHER = "OTHER"


class Reason(StrEnum):
    APPROVED = "APPROVED"
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"
    PENDING = "PENDING"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    SOURCE_NOT_ALLOWED = "SOURCE_NOT_ALLOWED"
    NOT_YET_VALID = "NOT_YET_VALID"
    EXPIRED = "EXPIRED"
    CERT_MISMATCH = "CERT_MISMATCH"
    MODEL_MISMATCH = "MODEL_MISMATCH"
    RULE_DENY = "RULE_DENY"
    RULE_ALLOW = "RULE_ALLOW"
    LOCKED_ID = "LOCKED_ID"
    LOCKED_SOURCE = "LOCKED_SOURCE"
    FLOOD = "FLOOD"


@dataclass(frozen=True, slots=True)
class Request:
    """One thing a device wants: source_ip is the packet's address, never a header's claim."""

    device_id: str
    source_ip: str
    transport: str
    kind: RequestKind
    cert_fingerprint: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    entry: Entry | None = None
    rule: Rule | None = None
    credential: Credential | None = None


class _Unparsable(Enum):
    TOKEN = 0


_BAD: Final = _Unparsable.TOKEN
# (version, integer) of a parsed address; _BAD when the string is not an address
_Addr = tuple[int, int] | _Unparsable
# (network integer, mask integer) pairs, split by IP version so a check never mixes families
_Nets = tuple[tuple[int, int], ...]


def _split(nets: tuple[IPNetwork, ...]) -> tuple[_Nets, _Nets]:
    v4 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4)
    v6 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 6)
    return v4, v6


def _in(addr: tuple[int, int], v4: _Nets, v6: _Nets) -> bool:
    version, value = addr
    for net, mask in v4 if version == 4 else v6:  # noqa: SIM110 - a plain loop beats any(genexpr) here
        if value & mask == net:
            return True
    return False


@dataclass(slots=True)
class _CEntry:
    entry: Entry
    any_source: bool
    v4: _Nets
    v6: _Nets
    approved: Decision  # the entry's admitting decision, made once (a frozen dataclass per login costs)


@dataclass(slots=True)
class _CRule:
    rule: Rule
    key: tuple[int, int, str]
    any_source: bool
    v4: _Nets
    v6: _Nets


def _compile_entry(entry: Entry) -> _CEntry:
    v4, v6 = _split(entry.allowed_sources)
    return _CEntry(entry, not entry.allowed_sources, v4, v6,
                   Decision(True, Reason.APPROVED, entry=entry, credential=entry.credential))


def _compile_rule(rule: Rule) -> _CRule:
    v4, v6 = _split(rule.allowed_sources)
    return _CRule(rule, (rule.priority, -rule.specificity, rule.id), not rule.allowed_sources, v4, v6)


def _norm_text(value: str | None) -> str:
    return (value or "").strip().casefold()


def check_device_info(entry: Entry, manufacturer: str | None, model: str | None,
                      firmware: str | None) -> Decision:
    """Compare a device's declared DeviceInfo (GB/T 28181-2016 §9.5.3) with the entry's expectation.

    Manufacturer and model compare case-insensitively and whitespace-trimmed; firmware by prefix.
    None means "not reported" and is not checked; an empty string is a report and must match.
    On MODEL_MISMATCH the caller suspends the device and raises an alarm (cloned/replaced camera).
    """
    mismatch = (
        (entry.expected_manufacturer is not None and manufacturer is not None
         and _norm_text(manufacturer) != _norm_text(entry.expected_manufacturer))
        or (entry.expected_model is not None and model is not None
            and _norm_text(model) != _norm_text(entry.expected_model))
        or (entry.expected_firmware_prefix is not None and firmware is not None
            and not firmware.strip().casefold().startswith(_norm_text(entry.expected_firmware_prefix)))
    )
    if mismatch:
        return Decision(False, Reason.MODEL_MISMATCH, entry=entry)
    return Decision(True, Reason.APPROVED, entry=entry, credential=entry.credential)


class Policy:
    """In-memory index of entries and rules answering decide() in a few microseconds.

    Entries: dict by device ID with pre-split integer networks. Rules: per prefix length a dict
    (prefix, type code|None) → rules sorted by precedence (two lookups per distinct prefix length,
    at most 42) — never a scan of all rules; only rules matching the ID are looked at.
    Not thread-safe: mutate and decide from the same event loop.
    """

    __slots__ = ("_addr_cache", "_by_prefix", "_entries", "_lengths", "_memo", "_rules")

    def __init__(self, entries: Iterable[Entry] = (), rules: Iterable[Rule] = ()) -> None:
        self._entries: dict[str, _CEntry] = {e.device_id: _compile_entry(e) for e in entries}
        self._rules: dict[str, Rule] = {}
        self._by_prefix: dict[int, dict[tuple[str, str | None], list[_CRule]]] = {}
        self._lengths: tuple[int, ...] = ()
        self._addr_cache: dict[str, _Addr] = {}
        self._memo: dict[tuple[str, str, str, RequestKind], bool] = {}
        for r in rules:
            self._rules[r.id] = r
        self._reindex_rules()

    # -- admin side ------------------------------------------------------------------------

    def upsert(self, entry: Entry) -> None:
        self._memo.clear()
        self._entries[entry.device_id] = _compile_entry(entry)

    def remove(self, device_id: str) -> Entry | None:
        self._memo.clear()
        ce = self._entries.pop(device_id, None)
        return ce.entry if ce else None

    def get(self, device_id: str) -> Entry | None:
        ce = self._entries.get(device_id)
        return ce.entry if ce else None

    def entries(self) -> Iterator[Entry]:
        return (ce.entry for ce in self._entries.values())

    def rules(self) -> list[Rule]:
        return sorted(self._rules.values(), key=lambda r: (r.priority, -r.specificity, r.id))

    def upsert_rule(self, rule: Rule) -> None:
        self._memo.clear()
        self._rules[rule.id] = rule
        self._reindex_rules()

    def remove_rule(self, rule_id: str) -> Rule | None:
        self._memo.clear()
        rule = self._rules.pop(rule_id, None)
        if rule is not None:
            self._reindex_rules()
        return rule

    def get_rule(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def __len__(self) -> int:
        return len(self._entries)

    def _reindex_rules(self) -> None:
        # key = (prefix, type code or None): every candidate found already matches the whole ID
        by_prefix: dict[int, dict[tuple[str, str | None], list[_CRule]]] = {}
        for rule in self._rules.values():
            if rule.status is not EntryStatus.APPROVED:
                continue
            by_prefix.setdefault(len(rule.id_prefix), {}).setdefault(
                (rule.id_prefix, rule.type_code), []).append(_compile_rule(rule))
        for table in by_prefix.values():
            for bucket in table.values():
                bucket.sort(key=lambda c: c.key)
        self._by_prefix = by_prefix
        self._lengths = tuple(sorted(by_prefix))

    # -- hot path --------------------------------------------------------------------------

    def _addr(self, source_ip: str) -> _Addr:
        cached = self._addr_cache.get(source_ip)
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(source_ip)
            if ip.version == 6 and ip.ipv4_mapped is not None:   # ::ffff:a.b.c.d from dual-stack sockets
                ip = ip.ipv4_mapped
            value: _Addr = (ip.version, int(ip))
        except ValueError:
            value = _BAD
        if len(self._addr_cache) >= _ADDR_CACHE_MAX:
            self._addr_cache.clear()
        self._addr_cache[source_ip] = value
        return value

    def allowed(self, device_id: str, source_ip: str, transport: str, kind: RequestKind, now: float) -> bool:
        """`decide(Request(device_id, source_ip, transport, kind), now).allowed` for a request that
        presents no certificate and declares no make/model (a keepalive), memoized per (ID, source,
        transport, kind) until the policy next changes — every upsert/remove clears the memo. A
        decision that depends on the time (an entry with a validity window) is never memoized."""
        key = (device_id, source_ip, transport, kind)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        allowed = self.decide(Request(device_id, source_ip, transport, kind), datetime.fromtimestamp(now, UTC)).allowed
        ce = self._entries.get(device_id)
        if ce is None or (ce.entry.not_before is None and ce.entry.not_after is None):
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = allowed
        return allowed

    def decide(self, request: Request, now: datetime) -> Decision:
        device_id = request.device_id
        addr = self._addr(request.source_ip)
        ce = self._entries.get(device_id)
        if ce is not None and ce.entry.status is not EntryStatus.PENDING:
            return self._decide_entry(ce, request, addr, now)
        if len(device_id) != 20 or not (device_id.isascii() and device_id.isdigit()):
            return Decision(False, Reason.UNKNOWN_DEVICE)
        decision = self._decide_rules(device_id, addr)
        if ce is None:
            return decision
        if decision.allowed:
            return replace(decision, entry=ce.entry)
        return Decision(False, Reason.PENDING, entry=ce.entry, rule=decision.rule)

    def _decide_entry(self, ce: _CEntry, request: Request, addr: _Addr, now: datetime) -> Decision:
        entry = ce.entry
        status = entry.status
        if status is EntryStatus.REVOKED:
            return Decision(False, Reason.REVOKED, entry=entry)
        if status is not EntryStatus.APPROVED:
            return Decision(False, Reason.SUSPENDED, entry=entry)
        if entry.not_before is not None and now < entry.not_before:
            return Decision(False, Reason.NOT_YET_VALID, entry=entry)
        if entry.not_after is not None and now >= entry.not_after:
            return Decision(False, Reason.EXPIRED, entry=entry)
        if addr is _BAD or not (ce.any_source or _in(addr, ce.v4, ce.v6)):
            return Decision(False, Reason.SOURCE_NOT_ALLOWED, entry=entry)
        pinned = entry.cert_fingerprint
        if pinned is not None and request.kind is not RequestKind.RTP:
            presented = request.cert_fingerprint
            if presented is None or presented.replace(":", "").lower() != pinned:
                return Decision(False, Reason.CERT_MISMATCH, entry=entry)
        if request.manufacturer is not None or request.model is not None or request.firmware is not None:
            info = check_device_info(entry, request.manufacturer, request.model, request.firmware)
            if not info.allowed:
                return info
        return ce.approved

    def _decide_rules(self, device_id: str, addr: _Addr) -> Decision:
        candidates: list[_CRule] | None = None
        merged = False
        by_prefix = self._by_prefix
        type_code = device_id[10:13]
        for length in self._lengths:
            table = by_prefix[length]
            prefix = device_id[:length]
            for bucket in (table.get((prefix, None)), table.get((prefix, type_code))):
                if bucket is not None:
                    if candidates is None:
                        candidates = bucket          # pre-sorted; not copied unless merged
                    else:
                        candidates = [*candidates, *bucket]
                        merged = True
        if candidates is None:
            return Decision(False, Reason.UNKNOWN_DEVICE)
        if merged:
            candidates.sort(key=lambda c: c.key)
        source_miss: Rule | None = None
        for cr in candidates:
            rule = cr.rule
            if addr is _BAD or not (cr.any_source or _in(addr, cr.v4, cr.v6)):
                if source_miss is None and rule.action is RuleAction.ALLOW:
                    source_miss = rule
                continue
            if rule.action is RuleAction.ALLOW:
                return Decision(True, Reason.RULE_ALLOW, rule=rule, credential=rule.credential)
            return Decision(False, Reason.RULE_DENY, rule=rule)
        if source_miss is not None:
            return Decision(False, Reason.SOURCE_NOT_ALLOWED, rule=source_miss)
        return Decision(False, Reason.UNKNOWN_DEVICE)   # explicit default deny
