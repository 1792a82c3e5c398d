"""The simulated social-resource site of `gbgate demo`: its IDs, whitelist entries and devices."""

from __future__ import annotations

from typing import Any

from devsim.swarm import SimDevice
from whitelist.model import Credential, Entry, EntryStatus

DEMO_SITE = "demo-site"
DEMO_LINK = "demo-link"


def demo_ids(domain: str, count: int) -> list[tuple[str, str]]:
    """(device ID, channel ID) pairs: IPC type 132 devices, each with one 131 channel."""
    out = []
    for i in range(1, count + 1):
        out.append((f"{domain}132{i:07d}", f"{domain}131{i:07d}"))
    return out


async def whitelist_cameras(admission: Any, domain: str, count: int, password: str) -> list[tuple[str, str]]:
    """Whitelist the demo cameras (approved, with credentials), audited as the demo operator."""
    store = admission.store
    ids = demo_ids(domain, count)
    for n, (device_id, _channel) in enumerate(ids, 1):
        credential = Credential.from_password(device_id, domain, password)
        entry = Entry(
            device_id=device_id,
            status=EntryStatus.APPROVED,
            credential=credential,
            name=f"演示摄像机 {n}",
            site=DEMO_SITE,
            link=DEMO_LINK,
            owner="演示站点",
            max_channels=4,
        )
        current = await store.get(device_id)
        if current is None or current.credential is None or current.credential.ha1_md5 != credential.ha1_md5:
            await store.save_entry(entry, actor="demo", action="add", reason="demo camera")
    await admission.sync()
    return ids


def sim_devices(ids: list[tuple[str, str]], password: str) -> list[SimDevice]:
    """One simulated IPC per ID pair; the last one streams H.265 when there are several."""
    count = len(ids)
    return [
        SimDevice(
            device_id=device_id,
            password=password,
            channels=[(channel_id, f"演示通道 {n}")],
            manufacturer="gbgate-sim",
            model="SIM-IPC",
            firmware="1.0",
            codec="h265" if n == count and count > 1 else "h264",
        )
        for n, (device_id, channel_id) in enumerate(ids, 1)
    ]
