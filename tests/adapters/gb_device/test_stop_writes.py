"""The adapter's stop lets its store writes in flight finish: a security alarm's audit record or
an unknown device's pending record raised just before shutdown is written, not cut short (a
write cancelled mid-transaction was lost, and before gateway/store/db.py's connection factory it
could keep SQLite's write lock for every writer after it)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.sip.events import Peer
from gateway.sip.message import Request, parse_message
from tests.adapters.gb_device.test_fast_paths import REALM, A, make_rig


class SlowAudit:
    """Audit and pending writes that take a while, as a store write does."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.records: list[tuple[str, str]] = []

    async def audit_event(self, action: str, device_id: str, details: Any, reason: str) -> None:
        await self.release.wait()
        self.records.append((action, device_id))

    async def record_pending(self, evidence: Any, now: float) -> None:
        await self.release.wait()
        self.records.append(("pending", str(evidence["device_id"])))


def test_stop_waits_for_audit_and_pending_writes() -> None:
    async def run() -> None:
        rig = make_rig(1e9)
        rig.adapter.whitelist_actions = audit = SlowAudit()
        rig.adapter.alarm(A, "alarm_binding_mismatch", Peer("udp", "192.0.2.9", 5060), "test")
        unknown = "34020000001320009999"
        register = parse_message((f"REGISTER sip:34020000002000000001@{REALM} SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-1\r\n"
                                  f"From: <sip:{unknown}@{REALM}>;tag=1\r\nTo: <sip:{unknown}@{REALM}>\r\n"
                                  "Call-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode())
        assert isinstance(register, Request)
        rig.adapter._record_pending(unknown, register, Peer("udp", "192.0.2.9", 5060), 1000.0)
        stopping = asyncio.create_task(rig.adapter.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # still writing
        audit.release.set()
        await asyncio.wait_for(stopping, 5)
        assert sorted(audit.records) == [("alarm_binding_mismatch", A), ("pending", unknown)]
        assert rig.adapter.stats["task_errors"] == 0

    asyncio.run(run())
