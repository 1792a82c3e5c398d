"""Decision tables and properties for whitelist.decide (pure: `now` passed in)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from whitelist.decide import Decision, Policy, Reason, Request, RequestKind, check_device_info
from whitelist.lockout import FloodGuard, Lockout, precheck
from whitelist.model import Credential, Entry, EntryStatus, Rule, RuleAction

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
ID = "34020000001320000001"
FP = "ab" * 32
CRED = Credential.from_password(ID, "3402000000", "secret")
SHARED = Credential.from_password("shared", "3402000000", "shared-pw")


def entry(**kw: object) -> Entry:
    base: dict[str, object] = {"device_id": ID, "status": EntryStatus.APPROVED, "credential": CRED,
                               "allowed_sources": ("10.0.0.0/24",)}
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]


def req(device_id: str = ID, ip: str = "10.0.0.5", kind: RequestKind = RequestKind.REGISTER,
        **kw: object) -> Request:
    return Request(device_id, ip, "udp", kind, **kw)  # type: ignore[arg-type]


def decide(policy: Policy, r: Request, now: datetime = NOW) -> Decision:
    return policy.decide(r, now)


# -- decision table: every Reason reachable ------------------------------------------------------

RULES = [
    Rule(id="allow-3402-ipc", id_prefix="3402", type_code="132", allowed_sources=("192.168.0.0/16",),
         action=RuleAction.ALLOW, credential=SHARED),
    Rule(id="deny-3402-dvr", id_prefix="3402", type_code="111", action=RuleAction.DENY),
]

TABLE: list[tuple[str, Entry | None, Request, Reason, bool]] = [
    ("approved", entry(), req(), Reason.APPROVED, True),
    ("unknown", None, req("11000000001320000001"), Reason.UNKNOWN_DEVICE, False),
    ("pending", entry(status=EntryStatus.PENDING), req("34020000001320000001", "1.1.1.1"),
     Reason.PENDING, False),
    ("suspended", entry(status=EntryStatus.SUSPENDED), req(), Reason.SUSPENDED, False),
    ("revoked", entry(status=EntryStatus.REVOKED), req(), Reason.REVOKED, False),
    ("wrong source", entry(), req(ip="10.0.1.5"), Reason.SOURCE_NOT_ALLOWED, False),
    ("not yet valid", entry(not_before=NOW + timedelta(seconds=1)), req(), Reason.NOT_YET_VALID, False),
    ("expired", entry(not_after=NOW), req(), Reason.EXPIRED, False),
    ("cert missing", entry(cert_fingerprint=FP), req(), Reason.CERT_MISMATCH, False),
    ("cert wrong", entry(cert_fingerprint=FP), req(cert_fingerprint="cd" * 32), Reason.CERT_MISMATCH, False),
    ("cert ok (colons, upper)", entry(cert_fingerprint=FP), req(cert_fingerprint=":".join(["AB"] * 32)),
     Reason.APPROVED, True),
    ("model mismatch", entry(expected_model="DS-2CD2T47"), req(model="XY-1"), Reason.MODEL_MISMATCH, False),
    ("rule deny", None, req("34020000001110000001", "192.168.1.1"), Reason.RULE_DENY, False),
    ("rule allow", None, req("34020000001320000099", "192.168.1.1"), Reason.RULE_ALLOW, True),
    ("rule allow, wrong source", None, req("34020000001320000099", "8.8.8.8"), Reason.SOURCE_NOT_ALLOWED,
     False),
]


@pytest.mark.parametrize(("name", "e", "r", "reason", "allowed"), TABLE, ids=[t[0] for t in TABLE])
def test_decision_table(name: str, e: Entry | None, r: Request, reason: Reason, allowed: bool) -> None:
    policy = Policy([e] if e else [], RULES)
    d = decide(policy, r)
    assert (d.reason, d.allowed) == (reason, allowed)
    if allowed:
        assert d.credential is not None
    if e is not None and reason is not Reason.RULE_ALLOW:
        assert d.entry == e


def test_lock_and_flood_reasons_reachable() -> None:
    lock, flood = Lockout(max_failures=2), FloodGuard(max_per_second=2, ban_for=10)
    r = req()
    assert precheck(lock, flood, r, 0.0) is None
    lock.record_failure(ID, "10.0.0.99", 1.0)
    lock.record_failure(ID, "10.0.0.98", 1.1)
    d = precheck(lock, flood, r, 1.2)
    assert d is not None and d.reason is Reason.LOCKED_ID and not d.allowed
    lock2 = Lockout(max_failures=2, source_distinct_ids=2)
    lock2.record_failure("34020000001320000002", "10.0.0.5", 1.0)
    lock2.record_failure("34020000001320000003", "10.0.0.5", 1.0)
    d = precheck(lock2, FloodGuard(), r, 1.2)
    assert d is not None and d.reason is Reason.LOCKED_SOURCE
    flood.allow("10.0.0.5", 2.0)   # two tokens, precheck at 0.0 used one, refilled since
    flood.allow("10.0.0.5", 2.0)
    d = precheck(Lockout(), flood, r, 2.0)
    assert d is not None and d.reason is Reason.FLOOD


def test_every_reason_is_covered_by_this_file() -> None:
    covered = {t[3] for t in TABLE} | {Reason.LOCKED_ID, Reason.LOCKED_SOURCE, Reason.FLOOD}
    assert covered == set(Reason)


# -- entries vs rules ---------------------------------------------------------------------------

def test_exact_entry_beats_allowing_rule() -> None:
    rule = Rule(id="all", action=RuleAction.ALLOW, credential=SHARED)
    policy = Policy([entry(status=EntryStatus.REVOKED)], [rule])
    assert decide(policy, req()).reason is Reason.REVOKED
    assert decide(policy, req("34020000001320000002")).reason is Reason.RULE_ALLOW


def test_pending_entry_does_not_shadow_rules() -> None:
    pending = entry(status=EntryStatus.PENDING, credential=None, allowed_sources=())
    allow = Rule(id="a", id_prefix="3402", action=RuleAction.ALLOW, credential=SHARED)
    d = decide(Policy([pending], [allow]), req())
    assert d.reason is Reason.RULE_ALLOW and d.entry == pending and d.credential == SHARED
    deny = Rule(id="d", id_prefix="3402", action=RuleAction.DENY)
    d = decide(Policy([pending], [deny]), req())
    assert d.reason is Reason.PENDING and d.rule == deny and not d.allowed


def test_rule_priority_then_longest_prefix_then_id() -> None:
    broad_allow = Rule(id="b", id_prefix="34", action=RuleAction.ALLOW, priority=10)
    narrow_deny = Rule(id="n", id_prefix="3402000000", action=RuleAction.DENY, priority=10)
    assert decide(Policy([], [broad_allow, narrow_deny]), req("34020000001320000009")).rule == narrow_deny
    urgent = replace(broad_allow, priority=1)
    assert decide(Policy([], [urgent, narrow_deny]), req("34020000001320000009")).rule == urgent
    typed = Rule(id="t", id_prefix="34", type_code="132", action=RuleAction.DENY, priority=10)
    # prefix 34 + type code (specificity 5) loses to the 10-digit prefix, beats bare "34"
    d = decide(Policy([], [broad_allow, typed]), req("34020000001320000009"))
    assert d.rule == typed
    twin = Rule(id="a", id_prefix="34", action=RuleAction.DENY, priority=10)
    assert decide(Policy([], [broad_allow, twin]), req("34020000001320000009")).rule == twin


def test_type_code_only_rule_and_inactive_rules() -> None:
    cams = Rule(id="cams", type_code="132", action=RuleAction.ALLOW)
    assert decide(Policy([], [cams]), req("11111111111320000001")).reason is Reason.RULE_ALLOW
    assert decide(Policy([], [cams]), req("11111111111310000001")).reason is Reason.UNKNOWN_DEVICE
    for status in (EntryStatus.PENDING, EntryStatus.SUSPENDED, EntryStatus.REVOKED):
        off = replace(cams, status=status)
        assert decide(Policy([], [off]), req("11111111111320000001")).reason is Reason.UNKNOWN_DEVICE


def test_rule_without_credential_is_allowed_with_none_credential() -> None:
    d = decide(Policy([], [Rule(id="x", id_prefix="3402", action=RuleAction.ALLOW)]), req())
    assert d.allowed and d.credential is None      # caller falls back to its default password or refuses


def test_policy_mutation() -> None:
    p = Policy()
    assert decide(p, req()).reason is Reason.UNKNOWN_DEVICE
    p.upsert(entry())
    assert decide(p, req()).reason is Reason.APPROVED and p.get(ID) == entry() and len(p) == 1
    p.upsert(entry(status=EntryStatus.SUSPENDED))
    assert decide(p, req()).reason is Reason.SUSPENDED
    assert p.remove(ID) is not None and p.remove(ID) is None
    assert decide(p, req()).reason is Reason.UNKNOWN_DEVICE
    p.upsert_rule(Rule(id="r", id_prefix="3402", action=RuleAction.ALLOW))
    assert decide(p, req()).reason is Reason.RULE_ALLOW and [r.id for r in p.rules()] == ["r"]
    p.remove_rule("r")
    assert decide(p, req()).reason is Reason.UNKNOWN_DEVICE and p.rules() == []


def test_rtp_skips_certificate_but_not_source() -> None:
    p = Policy([entry(cert_fingerprint=FP)])
    assert decide(p, req(kind=RequestKind.RTP)).reason is Reason.APPROVED
    assert decide(p, req(kind=RequestKind.RTP, ip="9.9.9.9")).reason is Reason.SOURCE_NOT_ALLOWED


def test_unparsable_source_denied_even_without_restriction() -> None:
    p = Policy([entry(allowed_sources=())])
    assert decide(p, req(ip="not-an-ip")).reason is Reason.SOURCE_NOT_ALLOWED
    assert decide(p, req(ip="203.0.113.9")).reason is Reason.APPROVED


def test_ipv4_mapped_ipv6_source_matches_ipv4_network() -> None:
    assert decide(Policy([entry()]), req(ip="::ffff:10.0.0.7")).reason is Reason.APPROVED


@pytest.mark.parametrize("bad_id", ["3402000000132000000", "340200000013200000011", "3402000000132000000a",
                                    "３４０２0000001320000001", ""])
def test_malformed_ids_are_unknown(bad_id: str) -> None:
    p = Policy([], [Rule(id="all", action=RuleAction.ALLOW)])
    assert decide(p, req(bad_id)).reason is Reason.UNKNOWN_DEVICE


# -- device info ----------------------------------------------------------------------------------

def test_check_device_info() -> None:
    e = entry(expected_manufacturer="Hikvision", expected_model="DS-2CD2T47G2",
              expected_firmware_prefix="V5.7")
    assert check_device_info(e, " hikvision ", "ds-2cd2t47g2", "V5.7.3 build 230101").allowed
    assert check_device_info(e, None, None, None).allowed      # not reported → not checked
    assert check_device_info(e, "Dahua", "DS-2CD2T47G2", "V5.7").reason is Reason.MODEL_MISMATCH
    assert check_device_info(e, "Hikvision", "DS-2CD2T47G3", "V5.7").reason is Reason.MODEL_MISMATCH
    assert check_device_info(e, "Hikvision", "DS-2CD2T47G2", "V5.6.0").reason is Reason.MODEL_MISMATCH
    assert check_device_info(e, "", None, None).reason is Reason.MODEL_MISMATCH   # reported empty
    assert check_device_info(entry(), "anything", "any", "x").allowed             # no expectation


# -- validity window: not_before inclusive, not_after exclusive ---------------------------------------

def test_validity_window_ends() -> None:
    start, end = NOW, NOW + timedelta(days=30)
    p = Policy([entry(not_before=start, not_after=end)])
    micro = timedelta(microseconds=1)
    assert decide(p, req(), start - micro).reason is Reason.NOT_YET_VALID
    assert decide(p, req(), start).reason is Reason.APPROVED
    assert decide(p, req(), end - micro).reason is Reason.APPROVED
    assert decide(p, req(), end).reason is Reason.EXPIRED


@given(offset=st.integers(min_value=-10**9, max_value=10**9))
def test_validity_window_property(offset: int) -> None:
    start, end = NOW, NOW + timedelta(seconds=1000)
    t = NOW + timedelta(microseconds=offset)
    d = decide(Policy([entry(not_before=start, not_after=end)]), req(), t)
    assert d.allowed == (start <= t < end)


# -- CIDR edges -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("net", "ip", "ok"), [
    ("10.0.0.0/24", "10.0.0.0", True), ("10.0.0.0/24", "10.0.0.255", True),
    ("10.0.0.0/24", "9.255.255.255", False), ("10.0.0.0/24", "10.0.1.0", False),
    ("192.0.2.7", "192.0.2.7", True), ("192.0.2.7/32", "192.0.2.8", False), ("192.0.2.7/32", "192.0.2.6", False),
    ("0.0.0.0/0", "255.255.255.255", True), ("0.0.0.0/0", "0.0.0.0", True), ("0.0.0.0/0", "::1", False),
    ("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", True), ("2001:db8::/32", "2001:db9::", False),
    ("::/0", "::", True), ("::/0", "10.0.0.1", False), ("fe80::1/128", "fe80::1", True),
    ("fe80::1/128", "fe80::2", False), ("2001:db8::/32", "2001:DB8::1", True),
])
def test_cidr_edges(net: str, ip: str, ok: bool) -> None:
    d = decide(Policy([entry(allowed_sources=(net,))]), req(ip=ip))
    assert d.allowed is ok
    assert d.reason is (Reason.APPROVED if ok else Reason.SOURCE_NOT_ALLOWED)


ipv4s = st.integers(0, 2**32 - 1).map(lambda n: ipaddress.IPv4Address(n))
ipv6s = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n))


@given(addr=st.one_of(ipv4s, ipv6s), host=st.one_of(ipv4s, ipv6s), data=st.data())
def test_cidr_matches_ipaddress_module(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                       host: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                       data: st.DataObject) -> None:
    prefix = data.draw(st.integers(0, host.max_prefixlen))
    net = ipaddress.ip_network(f"{host}/{prefix}", strict=False)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = ipaddress.IPv6Address(int(addr) ^ (1 << 100))   # keep mapped addresses out of this one
    d = decide(Policy([entry(allowed_sources=(net,))]), req(ip=str(addr)))
    assert d.allowed == (addr in net)


# -- properties -------------------------------------------------------------------------------------

ids = st.text(alphabet="0123456789", min_size=20, max_size=20)
ips = st.one_of(ipv4s, ipv6s).map(str)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
KNOWN = [entry(device_id=f"3402000000132000{i:04d}", allowed_sources=()) for i in range(50)]


@given(device_id=ids, ip=ips, now=times, kind=st.sampled_from(list(RequestKind)))
def test_default_deny_for_unknown_ids(device_id: str, ip: str, now: datetime, kind: RequestKind) -> None:
    assume(device_id not in {e.device_id for e in KNOWN})
    rules = [Rule(id="d", id_prefix="3402", action=RuleAction.DENY),
             Rule(id="a", id_prefix="9", type_code="999", allowed_sources=("10.0.0.0/8",),
                  action=RuleAction.ALLOW)]
    d = decide(Policy(KNOWN, rules), Request(device_id, ip, "udp", kind), now)
    covered = device_id.startswith("9") and device_id[10:13] == "999" and ip.startswith("10.") \
        and ipaddress.ip_address(ip).version == 4
    assert d.allowed == covered
    if not covered:
        assert d.reason in (Reason.UNKNOWN_DEVICE, Reason.RULE_DENY, Reason.SOURCE_NOT_ALLOWED)


@given(ip=ips, now=times, kind=st.sampled_from(list(RequestKind)), fp=st.one_of(st.none(), st.just(FP)),
       open_sources=st.booleans(), with_rule=st.booleans())
def test_revoked_never_admits(ip: str, now: datetime, kind: RequestKind, fp: str | None,
                              open_sources: bool, with_rule: bool) -> None:
    e = entry(status=EntryStatus.REVOKED, allowed_sources=() if open_sources else ("0.0.0.0/0", "::/0"))
    rules = [Rule(id="all", action=RuleAction.ALLOW, credential=SHARED)] if with_rule else []
    d = decide(Policy([e], rules), req(ip=ip, kind=kind, cert_fingerprint=fp), now)
    assert not d.allowed and d.reason is Reason.REVOKED


@given(now=times, ip=ips)
def test_suspended_and_pending_never_admit_without_rule(now: datetime, ip: str) -> None:
    for status in (EntryStatus.SUSPENDED, EntryStatus.PENDING):
        d = decide(Policy([entry(status=status, allowed_sources=())]), req(ip=ip), now)
        assert not d.allowed


# -- the memoized plain decision (the keepalive fast path) ----------------------------------------

_OPS = st.sampled_from(["approve", "revoke", "suspend", "move", "remove", "allow_rule", "deny_rule", "drop_rules",
                        "window", "pin"])


@given(st.lists(st.tuples(_OPS, st.sampled_from([ID, "34020000001320000002"]),
                          st.sampled_from(["10.0.0.5", "10.9.9.9"]), st.integers(-3, 3)), max_size=12))
def test_allowed_is_decide_through_every_whitelist_change(steps: list[tuple[str, str, str, int]]) -> None:
    """Policy.allowed answers what decide() answers, after any sequence of upserts/removes and rule
    changes (each clears the memo), and for entries with a validity window at any time."""
    policy = Policy([entry()])
    for op, device_id, ip, hours in steps:
        now = NOW + timedelta(hours=hours)
        if op == "approve":
            policy.upsert(entry(device_id=device_id))
        elif op in ("revoke", "suspend"):
            policy.upsert(entry(device_id=device_id, status=EntryStatus.REVOKED if op == "revoke"
                                else EntryStatus.SUSPENDED))
        elif op == "move":
            policy.upsert(entry(device_id=device_id, allowed_sources=("10.9.9.0/24",)))
        elif op == "remove":
            policy.remove(device_id)
        elif op in ("allow_rule", "deny_rule"):
            policy.upsert_rule(Rule(id=op, id_prefix="3402000000", status=EntryStatus.APPROVED,
                                    action=RuleAction.ALLOW if op == "allow_rule" else RuleAction.DENY))
        elif op == "drop_rules":
            policy.remove_rule("allow_rule")
            policy.remove_rule("deny_rule")
        elif op == "window":
            policy.upsert(entry(device_id=device_id, not_before=NOW - timedelta(hours=1),
                                not_after=NOW + timedelta(hours=1)))
        else:
            policy.upsert(entry(device_id=device_id, cert_fingerprint=FP))
        for kind in (RequestKind.MESSAGE, RequestKind.REGISTER):
            for _ in range(2):  # the second answer comes from the memo
                got = policy.allowed(device_id, ip, "udp", kind, now.timestamp())
                assert got == policy.decide(Request(device_id, ip, "udp", kind), now).allowed
