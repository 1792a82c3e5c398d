"""Simulated history for `gbgate demo`, so every report shows something real (issue 5 §7).

Forty days before now, for the demo's channels: contract data (a vendor, a rental batch, a fibre
link, a police station, the policy), a camera that flaps every day, one long outage with a
ticket the vendor answered, one maintenance window, a picture fault, and a one-hour gateway
outage. Event IDs are deterministic ("demo:..."), contract rows are upserts: seeding twice
changes nothing.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from gateway.health.timeline import UTC8, Event, State
from gateway.store import contract as T

DAY = 86_400.0
VENDOR, BATCH, LINK, STATION, SITE = "demo-vendor", "demo-batch", "demo-link", "demo-station", "demo-site"
POLICY = {
    "grace_hours": 2,
    "rate_per_fault_hour": "2.00",
    "repair_deadline_hours": 24,
    "rate_per_day_beyond_deadline": "30.00",
    "failed_channel_fault_hours": 8,
    "failed_channel_rent_ratio": "0.2",
    "cap_at_rent": True,
    "link_grace_hours": 1,
    "annual_offline_days": 30,
    "annual_deduction_per_channel": "300",
}


def history_events(channel_ids: list[str], now: float) -> tuple[list[Event], list[tuple[str, float, float]]]:
    """The simulated events and maintenance windows (subject, start, end), all before `now`."""
    midnight = datetime.fromtimestamp(now, UTC8).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    start = midnight - 40 * DAY
    ev: list[Event] = []

    def add(subject: str, ts: float, state: State, cause: str) -> None:
        if ts < now - 60:
            ev.append(Event(f"demo:{subject}:{int(ts)}:{state}", subject, ts, state, cause, {"simulated": True}))

    add("gateway", start, State.online, "gateway_start")
    add("gateway", midnight - 12 * DAY + 3 * 3600, State.unknown, "gateway_down")
    add("gateway", midnight - 12 * DAY + 4 * 3600, State.online, "gateway_restart")
    windows: list[tuple[str, float, float]] = []
    for n, cid in enumerate(channel_ids):
        subject = f"channel:{cid}"
        add(subject, start, State.online, "registered")
        if n == 1:  # flapping: 20 minutes offline twice a day
            for d in range(1, 40):
                for hour in (9, 18):
                    t0 = start + d * DAY + hour * 3600
                    add(subject, t0, State.offline, "keepalive_lost")
                    add(subject, t0 + 1200, State.online, "registered")
        if n == 2:  # one long outage
            t0 = midnight - 10 * DAY + 8 * 3600
            add(subject, t0, State.offline, "keepalive_lost")
            add(subject, t0 + 30 * 3600, State.online, "registered")
        if n == 3:  # a declared maintenance window over an outage
            t0 = midnight - 5 * DAY + 14 * 3600
            add(subject, t0 + 600, State.offline, "keepalive_lost")
            add(subject, t0 + 3 * 3600, State.online, "registered")
            windows.append((subject, t0, t0 + 4 * 3600))
        if n == 4:  # a picture fault found by the probe
            t0 = midnight - 3 * DAY + 10 * 3600
            add(subject, t0, State.picture_fault, "blur")
            add(subject, t0 + 3 * 3600, State.online, "picture_ok")
    return ev, windows


async def seed_history(services: Any, ids: list[tuple[str, str]], *, now: float | None = None) -> int:
    """Write the demo's contract data and history; `ids` are (device ID, channel ID) pairs.

    `services` is the app's Services (its `sessions`, or its device repository's session maker,
    and its health recorder's store are used) or an `async_sessionmaker` directly.
    """
    from sqlalchemy import select
    from sqlmodel import col

    from gateway.store.health_events import SqlHealthEvents

    now = time.time() if now is None else now
    sessions = getattr(services, "sessions", None) or getattr(getattr(services, "repo", None), "_sessions", None)
    sessions = sessions or services
    channel_ids = [c for _, c in ids]
    events, windows = history_events(channel_ids, now)
    start = min(e.ts for e in events)
    async with sessions() as s, s.begin():
        await s.merge(T.Vendor(id=VENDOR, name="演示运维公司", kind="rental", contact="王工", phone="13800000000"))
        await s.merge(
            T.RentalBatch(
                id=BATCH,
                vendor_id=VENDOR,
                name="演示2024批次",
                year=2024,
                channel_count=len(ids),
                monthly_rent_per_channel=Decimal("150.00"),
            )
        )
        await s.merge(
            T.FibreLink(
                id=LINK,
                name="演示专线",
                provider="电信",
                vendor_id=VENDOR,
                site_id=SITE,
                monthly_fee=Decimal("1200.00"),
            )
        )
        await s.merge(T.PoliceStation(id=STATION, name="演示派出所", contact="李警官"))
        for n, (device_id, channel_id) in enumerate(ids, 1):
            await s.merge(
                T.ChannelContract(
                    channel_id=channel_id,
                    device_id=device_id,
                    name=f"演示通道 {n}",
                    site_id=SITE,
                    owner="演示站点",
                    vendor_id=VENDOR,
                    batch_id=BATCH,
                    link_id=LINK,
                    station_id=STATION,
                    admitted_ts=start,
                )
            )
        existing = (
            (await s.execute(select(T.DeductionPolicyRecord).where(col(T.DeductionPolicyRecord.name) == "default")))
            .scalars()
            .first()
        )
        if existing is None:
            s.add(T.DeductionPolicyRecord(name="default", version=1, effective_from=date(2020, 1, 1), body=POLICY))
        have = {(w.subject, w.start_ts) for w in (await s.execute(select(T.MaintenanceWindow))).scalars()}
        for subject, a, b in windows:
            if (subject, a) not in have:
                s.add(
                    T.MaintenanceWindow(subject=subject, start_ts=a, end_ts=b, reason="更换交换机", declared_by="demo")
                )
        if len(channel_ids) > 2:
            outage = next(e for e in events if e.subject == f"channel:{channel_ids[2]}" and e.state is State.offline)
            tid = f"T{datetime.fromtimestamp(outage.ts, UTC8):%Y%m%d}-0001"
            if await s.get(T.FaultTicket, tid) is None:
                s.add(
                    T.FaultTicket(
                        id=tid,
                        channel_id=channel_ids[2],
                        station_id=STATION,
                        vendor_id=VENDOR,
                        fault="offline",
                        cause="keepalive_lost",
                        since_ts=outage.ts,
                        opened_ts=outage.ts,
                        status="repaired",
                        vendor_cause="光缆被施工挖断",
                        expected_repair_ts=outage.ts + DAY,
                        repaired_ts=outage.ts + 30 * 3600 + 900,
                        updated_ts=outage.ts + 31 * 3600,
                    )
                )
    store = getattr(getattr(services, "health", None), "store", None) or SqlHealthEvents(sessions)
    await store.insert(events)
    return len(events)
