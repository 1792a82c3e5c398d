"""Pull-source admission (whitelist.pull): the attacker's cases first, then the admitted ones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from whitelist.decide import Policy
from whitelist.errors import ValidationError
from whitelist.model import Entry, EntryStatus, Rule, RuleAction
from whitelist.pull import PullReason, decide_pull, parse_source_url, redact, scrub

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
CH = "34020000001310000001"


def policy(*sources: str, status: EntryStatus = EntryStatus.APPROVED) -> Policy:
    return Policy([Entry(device_id=CH, status=status, allowed_sources=tuple(sources))])  # type: ignore[arg-type]


# -- the attacker's cases ------------------------------------------------------------------------

def test_a_url_at_a_host_outside_the_entry_is_refused() -> None:
    src = parse_source_url("rtsp://10.9.9.9:554/admin")
    d = decide_pull(policy("192.168.1.0/24"), CH, src, ["10.9.9.9"], NOW)
    assert not d.allowed and d.reason is PullReason.NOT_ADMITTED
    assert "SOURCE_NOT_ALLOWED" in d.detail and d.address is None


def test_a_host_name_resolving_elsewhere_is_refused_even_if_one_address_is_inside() -> None:
    src = parse_source_url("rtsp://cam.example/live")
    d = decide_pull(policy("192.168.1.0/24"), CH, src, ["192.168.1.5", "10.0.0.1"], NOW)
    assert not d.allowed and d.reason is PullReason.NOT_ADMITTED
    assert "cam.example (10.0.0.1)" in d.detail


def test_a_name_resolving_inside_is_pinned_to_the_checked_address() -> None:
    src = parse_source_url("rtsp://u:p@cam.example:8554/live")
    d = decide_pull(policy("192.168.1.0/24"), CH, src, ["192.168.1.5"], NOW)
    assert d.allowed and d.address == "192.168.1.5"
    assert src.with_credentials("u", "p", d.address) == "rtsp://u:p@192.168.1.5:8554/live"


def test_any_source_entries_do_not_license_a_pull() -> None:
    src = parse_source_url("rtsp://169.254.169.254/latest")
    d = decide_pull(policy(), CH, src, ["169.254.169.254"], NOW)
    assert not d.allowed and d.reason is PullReason.HOST_NOT_LISTED


def test_an_any_source_allow_rule_does_not_license_a_pull_either() -> None:
    p = Policy([], [Rule(id="r", id_prefix="3402", action=RuleAction.ALLOW)])
    d = decide_pull(p, CH, parse_source_url("rtsp://10.0.0.1/x"), ["10.0.0.1"], NOW)
    assert d.reason is PullReason.HOST_NOT_LISTED


def test_unknown_suspended_unresolved_are_refused() -> None:
    src = parse_source_url("rtsp://192.168.1.5/x")
    assert decide_pull(Policy(), CH, src, ["192.168.1.5"], NOW).reason is PullReason.NOT_ADMITTED
    sus = policy("192.168.1.0/24", status=EntryStatus.SUSPENDED)
    assert "SUSPENDED" in decide_pull(sus, CH, src, ["192.168.1.5"], NOW).detail
    assert decide_pull(policy("192.168.1.0/24"), CH, src, [], NOW).reason is PullReason.UNRESOLVED


def test_file_sources_need_a_root_and_stay_under_it() -> None:
    p = policy("127.0.0.1/32")
    src = parse_source_url("file:///srv/media/../../etc/shadow")
    assert src.path == "/etc/shadow"
    assert decide_pull(p, CH, src, [], NOW).reason is PullReason.FILE_OUTSIDE_ROOT
    assert decide_pull(p, CH, src, [], NOW, file_root="/srv/media").reason is PullReason.FILE_OUTSIDE_ROOT
    ok = parse_source_url("file:///srv/media/a.mp4")
    assert decide_pull(p, CH, ok, [], NOW, file_root="/srv/media").allowed
    # a symlink inside the root pointing out of it: the shell passes the resolved path
    assert not decide_pull(p, CH, ok, [], NOW, file_root="/srv/media", real_path="/etc/passwd").allowed
    assert not decide_pull(p, CH, parse_source_url("file:///srv/mediax/a.mp4"), [], NOW,
                           file_root="/srv/media").allowed


@pytest.mark.parametrize("url", ["http://10.0.0.1/x", "gopher://x/", "rtsp://", "rtsp:// 10.0.0.1/",
                                 "rtsp://10.0.0.1:99999/", "file://remote/etc/passwd", "file:relative.mp4",
                                 "concat:a|b", "", "rtsp://10.0.0.1/\r\nx",
                                 "rtsp://10.0.0.1/cam?user=admin&Password=x", "rtmp://h/live?pwd=1"])
def test_urls_we_do_not_pull_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        parse_source_url(url)


def test_credentials_are_split_off_and_never_shown() -> None:
    src = parse_source_url("rtsp://admin:s%40cret!@192.168.1.5:554/Streaming/Channels/101?transport=tcp")
    assert src.username == "admin" and src.password == "s@cret!"
    assert src.bare == "rtsp://192.168.1.5:554/Streaming/Channels/101?transport=tcp"
    assert "cret" not in src.redacted() and "cret" not in repr(src)
    assert src.redacted() == "rtsp://admin:***@192.168.1.5:554/Streaming/Channels/101?transport=tcp"
    assert src.with_credentials(src.username, src.password) == \
        "rtsp://admin:s%40cret%21@192.168.1.5:554/Streaming/Channels/101?transport=tcp"
    assert redact("rtsp://admin:pw@[fe80::1]:554/x") == "rtsp://admin:***@[fe80::1]:554/x"
    assert "pw" not in redact("rtsp://admin:pw@bad host/x")


def test_admitted_literal_address() -> None:
    src = parse_source_url("rtmp://192.168.1.5/live/cam")
    d = decide_pull(policy("192.168.1.0/24"), CH, src, ["192.168.1.5"], NOW)
    assert d.allowed and d.reason is PullReason.APPROVED and d.address == "192.168.1.5"


def test_scrub_hides_passwords_in_free_text() -> None:
    text = "[Errno 5] Input/output error: 'rtsp://admin:hunter2@192.168.1.5:554/x' then rtmp://u:p@h/a"
    out = scrub(text)
    assert "hunter2" not in out and ":p@" not in out
    assert "rtsp://admin:***@192.168.1.5:554/x" in out and "rtmp://u:***@h/a" in out
