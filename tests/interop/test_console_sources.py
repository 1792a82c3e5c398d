"""The console's pull-source view in a real headless Chromium: the list shows the redacted URL and
the mode, never the password (issue 14 #3). Reuses the console fixture of test_console_chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.test_console_chromium import Console, check_png, chromium, keep, row
from tests.interop.test_console_chromium import console as console  # the fixture, re-exported

pytestmark = [pytest.mark.interop, pytest.mark.requires("chromium")]

SRC = "34020000001310000981"
PASSWORD = "console-pw-4d2a"


async def test_sources_view_lists_redacted_urls(console: Console, tmp_path: Path) -> None:
    from whitelist.model import Entry, EntryStatus, parse_networks

    svc = console.gw.services
    assert svc is not None and svc.admission is not None
    await svc.admission.store.save_entry(
        Entry(device_id=SRC, status=EntryStatus.APPROVED, allowed_sources=parse_networks(["192.168.60.0/24"])),
        actor="test", action="add")
    await svc.admission.sync()
    await svc.extra["sources"].add(SRC, f"rtsp://admin:{PASSWORD}@192.168.60.5/live", actor="test",
                                   mode="always_on", name="北门 RTSP")
    url = f"{console.url}/?token={console.admin}#sources"
    dom = await chromium(tmp_path, url)
    line = row(dom, SRC)
    assert "rtsp://admin:***@192.168.60.5/live" in line and "北门 RTSP" in line and "常拉" in line
    assert PASSWORD not in dom and "拉流源" in dom
    png = tmp_path / "console-sources.png"
    await chromium(tmp_path, url, screenshot=png)
    check_png(png)
    keep(png)
