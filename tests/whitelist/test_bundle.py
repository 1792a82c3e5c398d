"""Bundles and bulk lists: signed round trip, bad signature / wrong key / truncated → BundleError,
integrator CSV/JSON validated row by row with every error reported and nothing returned."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from whitelist.bundle import (
    export_json,
    export_signed,
    key_id,
    load_any,
    parse_csv,
    parse_export,
    parse_json,
    verify_signed,
)
from whitelist.decide import Policy
from whitelist.errors import BundleError, ValidationError, ValidationErrors
from whitelist.model import Credential, Entry, EntryStatus, Rule, RuleAction

DATA = Path(__file__).resolve().parents[1] / "data" / "whitelist"
REALM = "3402000000"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def policy() -> Policy:
    e1 = Entry(device_id="34020000001320000001", status=EntryStatus.APPROVED,
               credential=Credential.from_password("34020000001320000001", REALM, "pw"),
               allowed_sources=("10.0.0.0/24", "2001:db8::/32"), cert_fingerprint="ab" * 32,
               expected_manufacturer="Hikvision", site="东门", not_after=NOW, max_channels=4,
               evidence={"source": "10.0.0.5"}, version=3)
    e2 = Entry(device_id="34020000001320000002", status=EntryStatus.REVOKED)
    r = Rule(id="range", id_prefix="340200", type_code="132", allowed_sources=("192.168.0.0/16",),
             action=RuleAction.ALLOW, credential=Credential.from_password("shared", REALM, "x"), priority=5)
    return Policy([e1, e2], [r])


def test_export_json_round_trip_keeps_ha1_not_password() -> None:
    p = policy()
    data = export_json(p, now=NOW)
    assert b"ha1_md5" in data and b'"pw"' not in data
    b = parse_export(data)
    assert sorted(b.entries, key=lambda e: e.device_id) == sorted(p.entries(), key=lambda e: e.device_id)
    assert b.rules == p.rules() and b.exported_at == NOW


def test_signed_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    b = verify_signed(export_signed(policy(), key, now=NOW), key.public_key())
    assert len(b.entries) == 2 and len(b.rules) == 1 and b.key_id == key_id(key.public_key())


def _tamper_payload(signed: bytes) -> bytes:
    doc = json.loads(signed)
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["entries"][1]["status"] = "approved"          # un-revoke a device
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(doc).encode()


def test_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(BundleError, match="bad signature"):
        verify_signed(_tamper_payload(export_signed(policy(), key)), key.public_key())
    doc = json.loads(export_signed(policy(), key))
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[0] ^= 1
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(BundleError, match="bad signature"):
        verify_signed(json.dumps(doc).encode(), key.public_key())


def test_wrong_key() -> None:
    signed = export_signed(policy(), Ed25519PrivateKey.generate())
    with pytest.raises(BundleError, match="wrong key"):
        verify_signed(signed, Ed25519PrivateKey.generate().public_key())


def test_forged_key_id_still_bad_signature() -> None:
    ours = Ed25519PrivateKey.generate()
    doc = json.loads(export_signed(policy(), Ed25519PrivateKey.generate()))
    doc["key_id"] = key_id(ours.public_key())
    with pytest.raises(BundleError, match="bad signature"):
        verify_signed(json.dumps(doc).encode(), ours.public_key())


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -200, -3, -1])
def test_truncated(cut: int) -> None:
    key = Ed25519PrivateKey.generate()
    signed = export_signed(policy(), key)
    with pytest.raises(BundleError):
        verify_signed(signed[:cut], key.public_key())


@pytest.mark.parametrize("garbage", [b"\xff\xfe", b"[]", b'{"format": "gbgate-whitelist-signed"}',
                                     b"null", b'{"format": "other"}'])
def test_garbled(garbage: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(BundleError):
        verify_signed(garbage, key.public_key())


def test_signed_but_invalid_content_is_bundle_error() -> None:
    key = Ed25519PrivateKey.generate()
    payload = json.dumps({"format": "gbgate-whitelist", "version": 1,
                          "entries": [{"device_id": "123"}], "rules": []}).encode()
    from whitelist.bundle import SIGNING_CONTEXT
    doc = {"format": "gbgate-whitelist-signed", "version": 1, "key_id": key_id(key.public_key()),
           "payload": base64.b64encode(payload).decode(),
           "signature": base64.b64encode(key.sign(SIGNING_CONTEXT + payload)).decode()}
    with pytest.raises(BundleError, match="device_id"):
        verify_signed(json.dumps(doc).encode(), key.public_key())


def test_good_csv() -> None:
    entries = parse_csv((DATA / "good.csv").read_text(encoding="utf-8"), realm=REALM)
    assert [e.device_id for e in entries] == ["34020000001320000001", "34020000001320000002",
                                              "34020000001110000003"]
    e1, e2, e3 = entries
    assert e1.status is EntryStatus.PENDING and e1.name == "东门入口" and e1.max_channels == 1
    assert e1.credential == Credential.from_password("34020000001320000001", REALM, "s3cret-1")
    assert e1.not_before == datetime(2026, 1, 1, tzinfo=UTC)
    assert e1.not_after == datetime(2026, 12, 31, 16, tzinfo=UTC)          # +08:00 converted
    assert e1.expected_manufacturer == "Hikvision" and e1.expected_model == "DS-2CD2T47G2"
    assert [str(n) for n in e2.allowed_sources] == ["10.20.0.12/32", "10.20.1.0/24"] and e2.name == "Gate 2, north"
    assert e3.credential is None and str(e3.allowed_sources[0]) == "2001:db8:20::/48" and e3.max_channels == 16


def test_csv_status_chosen_by_caller_and_bom_accepted() -> None:
    text = "\ufeff" + (DATA / "good.csv").read_text(encoding="utf-8")
    assert {e.status for e in parse_csv(text, realm=REALM, status=EntryStatus.APPROVED)} == {EntryStatus.APPROVED}


def test_bad_csv_reports_every_error_with_line_and_field() -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_csv((DATA / "bad.csv").read_text(), realm=REALM)
    got = [(e.line, e.field) for e in info.value.errors]
    assert got == [(3, "device_id"), (4, "ip"), (5, "ip"), (6, "max_channels"), (7, "not_before"),
                   (8, "not_after"), (9, "device_id"), (10, "ip"), (10, "max_channels")]
    assert isinstance(info.value, ValidationError) and info.value.line == 3 and "9 invalid" in str(info.value)


def test_bad_csv_header() -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_csv((DATA / "bad_header.csv").read_text(), realm=REALM)
    assert {(e.line, e.field) for e in info.value.errors} == {(1, "device"), (1, "secret"), (1, "device_id")}
    with pytest.raises(ValidationErrors):
        parse_csv("", realm=REALM)


def test_csv_line_numbers_follow_quoted_newlines_and_extra_values() -> None:
    text = ('device_id,name\n34020000001320000001,"two\nlines"\n'
            '3402000000132000000X,bad\n34020000001320000003,a,extra\n')
    with pytest.raises(ValidationErrors) as info:
        parse_csv(text, realm=REALM)
    assert [(e.line, e.field) for e in info.value.errors] == [(2, "name"), (4, "device_id"), (5, "row")]


def test_good_json() -> None:
    entries = parse_json((DATA / "good.json").read_bytes(), realm=REALM)
    assert [e.device_id for e in entries] == ["34020000001320000011", "34020000001320000012"]
    assert entries[0].max_channels == 2 and len(entries[0].allowed_sources) == 2
    assert entries[0].credential is not None and entries[1].credential is None


def test_bad_json_reports_every_error() -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_json((DATA / "bad.json").read_bytes(), realm=REALM)
    assert [(e.line, e.field) for e in info.value.errors] == [(2, "device_id"), (3, "entry"),
                                                              (4, "colour"), (5, "not_before")]
    with pytest.raises(ValidationErrors):
        parse_json(b"{not json", realm=REALM)
    with pytest.raises(ValidationErrors, match="bundle"):
        parse_json(export_json(policy()), realm=REALM)


def test_load_any_dispatch() -> None:
    key = Ed25519PrivateKey.generate()
    assert len(load_any(export_signed(policy(), key), realm=REALM, public_key=key.public_key()).entries) == 2
    assert len(load_any(export_json(policy()), realm=REALM, allow_unsigned_bundle=True).rules) == 1
    with pytest.raises(BundleError, match="unsigned bundle refused"):
        load_any(export_json(policy()), realm=REALM)        # statuses and HA1s nobody vouches for
    assert len(load_any((DATA / "good.json").read_bytes(), realm=REALM).entries) == 2
    assert len(load_any((DATA / "good.csv").read_bytes(), realm=REALM).entries) == 3
    gbk = (DATA / "good.csv").read_text(encoding="utf-8").encode("gb18030")
    assert load_any(gbk, realm=REALM).entries[0].name == "东门入口"
    with pytest.raises(BundleError):
        load_any(export_signed(policy(), key), realm=REALM)                      # no key to check with
    with pytest.raises(BundleError):
        load_any(export_json(policy()), realm=REALM, require_signature=True)
    with pytest.raises(BundleError):
        load_any(_tamper_payload(export_signed(policy(), key)), realm=REALM, public_key=key.public_key())
