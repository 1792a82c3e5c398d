"""Validators name the field; values normalise; HA1 never leaks through repr or public_dict()."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whitelist.errors import ValidationError
from whitelist.model import (
    Credential,
    Entry,
    EntryStatus,
    Rule,
    normalize_fingerprint,
    parse_network,
    parse_networks,
    parse_timestamp,
    validate_device_id,
    validate_status,
)

ID = "34020000001320000001"


def test_credential_ha1_per_rfc7616() -> None:
    c = Credential.from_password(ID, "3402000000", "12345678")
    a1 = f"{ID}:3402000000:12345678".encode()
    assert c.ha1_md5 == hashlib.md5(a1).hexdigest() and c.ha1_sha256 == hashlib.sha256(a1).hexdigest()
    assert c.ha1_md5 not in repr(c) and c.ha1_sha256 not in repr(c)
    with pytest.raises(ValidationError):
        Credential.from_password(ID, "r", "")
    with pytest.raises(ValidationError) as info:
        Credential(username=ID, realm="r", ha1_md5="zz", ha1_sha256="0" * 64)
    assert info.value.field == "credential.ha1_md5"


def test_public_dict_hides_credential() -> None:
    c = Credential.from_password(ID, "r", "pw")
    e = Entry(device_id=ID, credential=c)
    d = e.public_dict()
    text = repr(d) + repr(e)
    assert d["has_credential"] is True and "credential" not in d
    assert c.ha1_md5 not in text and c.ha1_sha256 not in text
    assert Entry(device_id=ID).public_dict()["has_credential"] is False
    assert c.ha1_md5 not in repr(Rule(id="r", credential=c).public_dict())


@pytest.mark.parametrize("bad", ["", "1234", "3402000000132000000", "340200000013200000012", "3402000000132000000a",
                                 "٣٤٠٢0000001320000001", None, 34020000001320000001])
def test_device_id_invalid(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_device_id(bad, line=7)
    assert (info.value.field, info.value.line) == ("device_id", 7)


def test_device_id_valid_trimmed() -> None:
    assert validate_device_id(f" {ID} ") == ID


@pytest.mark.parametrize(("text", "net"), [("10.0.0.1", "10.0.0.1/32"), ("10.0.0.0/8", "10.0.0.0/8"),
                                           ("::1", "::1/128"), ("2001:db8::/32", "2001:db8::/32"),
                                           ("0.0.0.0/0", "0.0.0.0/0")])
def test_networks_valid(text: str, net: str) -> None:
    assert parse_network(text) == ipaddress.ip_network(net)


@pytest.mark.parametrize("bad", ["", "10.0.0.256", "10.0.0.0/33", "10.0.0.1/24", "2001:db8::1/32", "host", 5])
def test_networks_invalid(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_network(bad, field="ip", line=3)
    assert (info.value.field, info.value.line) == ("ip", 3)


def test_networks_lists_dedup() -> None:
    assert parse_networks("10.0.0.1; 10.0.0.1,10.1.0.0/16") == (ipaddress.ip_network("10.0.0.1/32"),
                                                                 ipaddress.ip_network("10.1.0.0/16"))
    assert parse_networks(None) == () and parse_networks("") == ()


def test_timestamps() -> None:
    assert parse_timestamp("2026-01-01", field="t") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_timestamp("2026-01-01T08:00:00+08:00", field="t") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_timestamp("2026-01-01T00:00:00Z", field="t") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_timestamp("", field="t") is None
    tz8 = timezone(timedelta(hours=8))
    assert parse_timestamp(datetime(2026, 1, 1, 8, tzinfo=tz8), field="t") == datetime(2026, 1, 1, tzinfo=UTC)
    for bad in ("tomorrow", "2026-13-01", "2026-02-30", 12):
        with pytest.raises(ValidationError) as info:
            parse_timestamp(bad, field="not_before", line=2)
        assert info.value.field == "not_before"


def test_fingerprints() -> None:
    fp = "AB:" * 31 + "AB"
    assert normalize_fingerprint(fp) == "ab" * 32
    assert normalize_fingerprint("sha256:" + "Cd" * 32) == "cd" * 32
    assert normalize_fingerprint(None) is None
    for bad in ("ab" * 31, "zz" * 32, "ab" * 33):
        with pytest.raises(ValidationError) as info:
            normalize_fingerprint(bad)
        assert info.value.field == "cert_fingerprint"


def test_status() -> None:
    assert validate_status(" Approved ") is EntryStatus.APPROVED
    with pytest.raises(ValidationError) as info:
        validate_status("active")
    assert info.value.field == "status"


def test_entry_validation_names_field() -> None:
    with pytest.raises(ValidationError) as info:
        Entry(device_id=ID, not_before=datetime(2027, 1, 1, tzinfo=UTC), not_after=datetime(2026, 1, 1, tzinfo=UTC))
    assert info.value.field == "not_after"
    with pytest.raises(ValidationError) as info:
        Entry(device_id=ID, max_channels=-1)
    assert info.value.field == "max_channels"
    with pytest.raises(ValidationError) as info:
        Entry.from_dict({"device_id": ID, "allowed_sources": ["10.0.0.1/8"]}, line=4)
    assert (info.value.field, info.value.line) == ("allowed_sources", 4)


def test_rule_validation() -> None:
    for kw, field in (({"id_prefix": "34a"}, "id_prefix"), ({"type_code": "13"}, "type_code"),
                      ({"action": "maybe"}, "action"), ({"id": ""}, "id"), ({"priority": "1"}, "priority")):
        with pytest.raises(ValidationError) as info:
            Rule(**{"id": "r", **kw})  # type: ignore[arg-type]
        assert info.value.field == field
    r = Rule(id="r", id_prefix="3402", type_code="132")
    assert r.specificity == 7 and r.matches_id(ID) and not r.matches_id("34020000001310000001")


@given(st.builds(
    Entry, device_id=st.text("0123456789", min_size=20, max_size=20), status=st.sampled_from(list(EntryStatus)),
    allowed_sources=st.lists(st.integers(0, 2**32 - 1).map(lambda n: ipaddress.ip_network(n)), max_size=3)
    .map(tuple), name=st.text(st.characters(min_codepoint=32, max_codepoint=0x9FFF), max_size=30).map(str.strip),
    max_channels=st.one_of(st.none(), st.integers(0, 64)), version=st.integers(0, 100),
    credential=st.one_of(st.none(), st.just(Credential.from_password(ID, "r", "p")))))
def test_entry_dict_round_trip(e: Entry) -> None:
    assert Entry.from_dict(e.to_dict(include_credential=True)) == e
