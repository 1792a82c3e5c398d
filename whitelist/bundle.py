"""Policy bundles (gbgate ↔ gbgate) and integrators' bulk lists (CSV / JSON).

Bundle = JSON `{"format": "gbgate-whitelist", "version": 1, "entries": [...], "rules": [...]}` with
credentials as HA1 only (the password is never known to us). Signed bundle = JSON
`{"format": "gbgate-whitelist-signed", "version": 1, "key_id": hex, "payload": base64,
"signature": base64}` where the Ed25519 signature covers `SIGNING_CONTEXT + payload bytes` and
key_id = SHA-256 of the raw 32-byte public key. The payload is kept as opaque bytes so no JSON
canonicalisation is needed to re-verify.

Integrator lists: CSV columns device_id,name,password,ip,site,link,owner,contract_ref,manufacturer,
model,max_channels,not_before,not_after,channel_ranges (header required, ip = ';'-separated IPs/CIDRs,
channel_ranges = a lower platform's allowed channel IDs "lo-hi,id", quoted in CSV) or a JSON
array of objects with the same keys (`line` = 1-based position in the array). Every row is
validated and ALL problems are raised together as ValidationErrors; nothing is returned — hence
nothing can be applied — when any row is bad. A text cell starting with = + - @ TAB or CR is
refused (OWASP CSV injection): the list came from a spreadsheet and goes back into spreadsheets
(exports, reports), where such a cell is a formula; refusing names the line so the integrator fixes
the source rather than us silently storing a changed name.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from whitelist.decide import Policy
from whitelist.errors import BundleError, ValidationError, ValidationErrors
from whitelist.model import (
    Credential,
    Entry,
    EntryStatus,
    Rule,
    checked_text,
    iso,
    optional_int,
    optional_text,
    parse_networks,
    parse_timestamp,
    validate_device_id,
)
from whitelist.ranges import parse_channel_ranges

FORMAT = "gbgate-whitelist"
SIGNED_FORMAT = "gbgate-whitelist-signed"
VERSION = 1
SIGNING_CONTEXT = b"gbgate-whitelist-bundle-v1\n"   # domain separation for the Ed25519 signature
CSV_COLUMNS = ("device_id", "name", "password", "ip", "site", "link", "owner", "contract_ref",
               "manufacturer", "model", "max_channels", "not_before", "not_after", "channel_ranges")
MAX_ROWS = 200_000


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_TEXT_COLUMNS = ("name", "site", "link", "owner", "contract_ref", "manufacturer", "model")


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    entries: list[Entry]
    rules: list[Rule]
    exported_at: datetime | None = None
    key_id: str | None = None
    lines: list[int] | None = None     # source line of each entry (CSV/JSON lists), for error messages


def bundle_format(data: bytes) -> str | None:
    """FORMAT or SIGNED_FORMAT when `data` is a gbgate bundle document, else None (a list)."""
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not (stripped.startswith(b"{") and b'"gbgate-whitelist' in stripped[:4096]):
        return None
    try:
        fmt = json.loads(data).get("format")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return fmt if fmt in (FORMAT, SIGNED_FORMAT) else None


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw public key — the same value certs.signing.key_id() gives."""
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


# -- export ----------------------------------------------------------------------------------------

def export_json(policy: Policy, *, now: datetime | None = None) -> bytes:
    """The whole policy with credentials as HA1 (password-equivalent: protect the file)."""
    doc = {"format": FORMAT, "version": VERSION, "exported_at": iso(now or datetime.now(UTC)),
           "entries": [e.to_dict(include_credential=True)
                       for e in sorted(policy.entries(), key=lambda e: e.device_id)],
           "rules": [r.to_dict(include_credential=True) for r in policy.rules()]}
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


def export_signed(policy: Policy, private_key: Ed25519PrivateKey, *, now: datetime | None = None) -> bytes:
    payload = export_json(policy, now=now)
    signature = private_key.sign(SIGNING_CONTEXT + payload)
    doc = {"format": SIGNED_FORMAT, "version": VERSION, "key_id": key_id(private_key.public_key()),
           "payload": base64.b64encode(payload).decode("ascii"),
           "signature": base64.b64encode(signature).decode("ascii")}
    return json.dumps(doc, indent=1).encode("ascii")


# -- import of bundles -----------------------------------------------------------------------------

def _load_json(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{what} is truncated or garbled (not JSON: {exc})") from None


def parse_export(data: bytes | str) -> PolicyBundle:
    """Read an unsigned export_json() document; any bad field raises BundleError (all-or-nothing)."""
    doc = _load_json(data, "bundle")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError("not a gbgate whitelist bundle (format field missing or wrong)")
    if doc.get("version") != VERSION:
        raise BundleError(f"unsupported bundle version {doc.get('version')!r}")
    raw_entries, raw_rules = doc.get("entries"), doc.get("rules", [])
    if not isinstance(raw_entries, list) or not isinstance(raw_rules, list):
        raise BundleError("bundle entries/rules must be lists")
    errors: list[ValidationError] = []
    entries: list[Entry] = []
    rules: list[Rule] = []
    for i, item in enumerate(raw_entries, 1):
        try:
            entries.append(Entry.from_dict(item, line=i))
        except ValidationError as exc:
            errors.append(exc)
    for i, item in enumerate(raw_rules, 1):
        try:
            rules.append(Rule.from_dict(item, line=i))
        except ValidationError as exc:
            errors.append(ValidationError(f"rules.{exc.field}", exc.message, line=i))
    _check_duplicates(entries, errors)
    if errors:
        raise BundleError(f"bundle content invalid: {ValidationErrors(errors)}")
    try:
        exported = parse_timestamp(doc.get("exported_at"), field="exported_at")
    except ValidationError:
        exported = None
    return PolicyBundle(entries, rules, exported)


def verify_signed(data: bytes | str, public_key: Ed25519PublicKey) -> PolicyBundle:
    """Check key id and Ed25519 signature BEFORE reading the payload; BundleError on any problem."""
    doc = _load_json(data, "signed bundle")
    if not isinstance(doc, dict) or doc.get("format") != SIGNED_FORMAT:
        raise BundleError("not a signed gbgate whitelist bundle (format field missing or wrong)")
    expected = key_id(public_key)
    if doc.get("key_id") != expected:
        raise BundleError(f"wrong key: bundle signed by key {str(doc.get('key_id'))[:16]}…, "
                          f"ours is {expected[:16]}…")
    try:
        payload = base64.b64decode(str(doc["payload"]), validate=True)
        signature = base64.b64decode(str(doc["signature"]), validate=True)
    except (KeyError, binascii.Error, ValueError) as exc:
        raise BundleError(f"signed bundle is truncated or garbled: {exc}") from None
    try:
        public_key.verify(signature, SIGNING_CONTEXT + payload)
    except InvalidSignature:
        raise BundleError("bad signature: the bundle was altered or not signed by this key") from None
    bundle = parse_export(payload)
    return PolicyBundle(bundle.entries, bundle.rules, bundle.exported_at, expected)


# -- integrators' lists ------------------------------------------------------------------------------

def _check_duplicates(entries: list[Entry], errors: list[ValidationError],
                      lines: list[int] | None = None) -> None:
    first: dict[str, int] = {}
    for i, e in enumerate(entries):
        line = lines[i] if lines else i + 1
        if e.device_id in first:
            errors.append(ValidationError("device_id", f"duplicate of line {first[e.device_id]}", line=line))
        else:
            first[e.device_id] = line


def _row_entry(row: Mapping[str, Any], line: int, realm: str, status: EntryStatus,
               errors: list[ValidationError]) -> Entry | None:
    """Validate every field of one row, appending each problem (not just the first) to errors."""
    entry = _clean_row_entry(row, line, realm, status)
    return entry if entry is not None else _row_entry_collecting(row, line, realm, status, errors)


def _clean_row_entry(row: Mapping[str, Any], line: int, realm: str, status: EntryStatus) -> Entry | None:
    """The same checks as _row_entry_collecting() without collecting: the entry of a row with no
    problem, else None (the collecting pass then names every problem). A clean 20,000-row list
    is most lists, and skipping a wrapper per field saves a fifth of the parse."""
    for k in _TEXT_COLUMNS:
        raw_value = row.get(k)
        if isinstance(raw_value, str) and raw_value.startswith(FORMULA_PREFIXES):
            return None
    password = row.get("password")
    if password is not None and not isinstance(password, str):
        return None
    get = row.get
    try:
        device_id = validate_device_id(get("device_id"), line=line)
        nets = parse_networks(get("ip"), field="ip", line=line)
        max_channels = optional_int(get("max_channels"), field="max_channels", line=line)
        channel_ranges = parse_channel_ranges(get("channel_ranges"), line=line)
        not_before = parse_timestamp(get("not_before"), field="not_before", line=line)
        not_after = parse_timestamp(get("not_after"), field="not_after", line=line)
        name, site, link, owner, contract_ref = (checked_text(get(k), field=k, line=line)
                                                 for k in ("name", "site", "link", "owner", "contract_ref"))
        manufacturer = optional_text(get("manufacturer"), field="manufacturer", line=line)
        model = optional_text(get("model"), field="model", line=line)
        if not_before and not_after and not_after <= not_before:
            return None
        cred = Credential.from_password(device_id, realm, password.strip()) \
            if password and password.strip() else None
        return Entry(device_id=device_id, status=status, credential=cred, allowed_sources=nets,
                     expected_manufacturer=manufacturer, expected_model=model, max_channels=max_channels,
                     channel_ranges=channel_ranges,
                     not_before=not_before, not_after=not_after, name=name, site=site, link=link,
                     owner=owner, contract_ref=contract_ref)
    except ValidationError:
        return None


def _row_entry_collecting(row: Mapping[str, Any], line: int, realm: str, status: EntryStatus,
                          errors: list[ValidationError]) -> Entry | None:
    found: list[ValidationError] = []

    def field(fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, line=line, **kw)
        except ValidationError as exc:
            found.append(exc)
            return None

    device_id = field(validate_device_id, row.get("device_id"))
    password = row.get("password")
    if password is not None and not isinstance(password, str):
        found.append(ValidationError("password", "must be a string", line=line))
        password = None
    ip = row.get("ip")
    nets = field(parse_networks, ip, field="ip")
    max_channels = field(optional_int, row.get("max_channels"), field="max_channels")
    channel_ranges = field(parse_channel_ranges, row.get("channel_ranges"))
    not_before = field(parse_timestamp, row.get("not_before"), field="not_before")
    not_after = field(parse_timestamp, row.get("not_after"), field="not_after")
    texts = {k: field(checked_text, row.get(k), field=k) for k in ("name", "site", "link", "owner", "contract_ref")}
    manufacturer = field(optional_text, row.get("manufacturer"), field="manufacturer")
    model = field(optional_text, row.get("model"), field="model")
    if not_before and not_after and not_after <= not_before:
        found.append(ValidationError("not_after", "must be later than not_before", line=line))
    for k in _TEXT_COLUMNS:
        raw_value = row.get(k)
        if isinstance(raw_value, str) and raw_value.startswith(FORMULA_PREFIXES):
            found.append(ValidationError(k, "must not start with = + - @ TAB or CR (spreadsheet formula)",
                                         line=line))
    if found or device_id is None:
        errors.extend(found)
        return None
    cred = Credential.from_password(device_id, realm, password.strip()) if password and password.strip() \
        else None
    return Entry(device_id=device_id, status=status, credential=cred, allowed_sources=nets or (),
                 expected_manufacturer=manufacturer, expected_model=model, max_channels=max_channels,
                 channel_ranges=channel_ranges or (),
                 not_before=not_before, not_after=not_after, name=texts["name"] or "",
                 site=texts["site"] or "", link=texts["link"] or "", owner=texts["owner"] or "",
                 contract_ref=texts["contract_ref"] or "")


def parse_csv(text: str, *, realm: str, status: EntryStatus = EntryStatus.PENDING) -> list[Entry]:
    """Integrator CSV → entries (status `pending` unless the caller is allowed to say otherwise)."""
    return parse_csv_lines(text, realm=realm, status=status)[0]


def parse_csv_lines(text: str, *, realm: str,
                    status: EntryStatus = EntryStatus.PENDING) -> tuple[list[Entry], list[int]]:
    """parse_csv() plus the file line of each entry, so later refusals can name it."""
    if text.startswith("\ufeff"):            # Excel's UTF-8 BOM
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="__extra__")
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise ValidationErrors([ValidationError("header", f"unreadable CSV: {exc}", line=1)]) from None
    if not header:
        raise ValidationErrors([ValidationError("header", "empty file: a header row is required", line=1)])
    errors: list[ValidationError] = []
    cols = [h.strip().lower() for h in header]
    for c in cols:
        if c not in CSV_COLUMNS:
            errors.append(ValidationError(c or "header", f"unknown column (expected some of "
                                          f"{', '.join(CSV_COLUMNS)})", line=1))
    if "device_id" not in cols:
        errors.append(ValidationError("device_id", "required column missing", line=1))
    if errors:
        raise ValidationErrors(errors)
    reader.fieldnames = cols
    entries: list[Entry] = []
    lines: list[int] = []
    try:
        start = reader.line_num + 1
        for raw in reader:
            line = start
            start = reader.line_num + 1
            if len(entries) + len(errors) >= MAX_ROWS:
                errors.append(ValidationError("file", f"more than {MAX_ROWS} rows", line=line))
                break
            if raw.get("__extra__"):
                errors.append(ValidationError("row", "more values than header columns", line=line))
                continue
            if all(v is None or not str(v).strip() for v in raw.values()):
                continue                          # blank line
            entry = _row_entry(raw, line, realm, status, errors)
            if entry is not None:
                entries.append(entry)
                lines.append(line)
    except csv.Error as exc:
        errors.append(ValidationError("file", f"unreadable CSV: {exc}", line=reader.line_num))
    _check_duplicates(entries, errors, lines)
    if errors:
        raise ValidationErrors(sorted(errors, key=lambda e: e.line or 0))
    return entries, lines


def parse_json(data: bytes | str, *, realm: str, status: EntryStatus = EntryStatus.PENDING) -> list[Entry]:
    """Integrator JSON: an array of objects with the CSV column names (or {"entries": [...]})."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationErrors([ValidationError("file", f"not JSON: {exc}")]) from None
    if isinstance(doc, dict) and doc.get("format") in (FORMAT, SIGNED_FORMAT):
        raise ValidationErrors([ValidationError("format", "this is a gbgate bundle: use parse_export() "
                                                "or verify_signed()")])
    items = doc.get("entries") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ValidationErrors([ValidationError("file", "expected a JSON array of entries")])
    if len(items) > MAX_ROWS:
        raise ValidationErrors([ValidationError("file", f"more than {MAX_ROWS} entries")])
    errors: list[ValidationError] = []
    entries: list[Entry] = []
    lines: list[int] = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            errors.append(ValidationError("entry", "must be an object", line=i))
            continue
        unknown = sorted(set(item) - set(CSV_COLUMNS))
        for k in unknown:
            errors.append(ValidationError(str(k), "unknown field", line=i))
        row = dict(item)
        for k in ("max_channels",):
            if isinstance(row.get(k), int) and not isinstance(row.get(k), bool):
                row[k] = str(row[k])
        entry = _row_entry(row, i, realm, status, errors)
        if entry is not None and not unknown:
            entries.append(entry)
            lines.append(i)
    _check_duplicates(entries, errors, lines)
    if errors:
        raise ValidationErrors(sorted(errors, key=lambda e: e.line or 0))
    return entries


def load_any(data: bytes, *, realm: str, public_key: Ed25519PublicKey | None = None,
             status: EntryStatus = EntryStatus.PENDING, require_signature: bool = False,
             allow_unsigned_bundle: bool = False) -> PolicyBundle:
    """For `gbgate whitelist import FILE`: signed bundle, integrator JSON or CSV.

    An unsigned bundle carries statuses and HA1s that nobody vouches for, so it is refused unless
    the caller says otherwise (`allow_unsigned_bundle`, tests and tools only)."""
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    fmt = bundle_format(data)
    if fmt == SIGNED_FORMAT:
        if public_key is None:
            raise BundleError("signed bundle but no public key to verify it with")
        return verify_signed(data, public_key)
    if fmt == FORMAT:
        if require_signature or not allow_unsigned_bundle:
            raise BundleError("unsigned bundle refused: only a bundle signed by the trusted policy key "
                              "is imported (gbgate whitelist export --signed)")
        return parse_export(data)
    if require_signature:
        raise BundleError("a signed bundle is required")
    if stripped.startswith((b"[", b"{")):
        entries = parse_json(data, realm=realm, status=status)
        return PolicyBundle(entries, [], lines=list(range(1, len(entries) + 1)))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")             # Chinese Excel exports
        except UnicodeDecodeError:
            raise ValidationErrors([ValidationError("file", "neither UTF-8 nor GB18030 text")]) from None
    entries, lines = parse_csv_lines(text, realm=realm, status=status)
    return PolicyBundle(entries, [], lines=lines)
