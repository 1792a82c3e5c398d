"""Admission service: the whitelist store, the in-memory policy, and what follows a change.

The audit log doubles as the change feed: every whitelist change (from this process, the CLI
in another process, or another node) appends an audit record in the same transaction, so
polling the audit tail (every 0.5 s, one indexed query) finds every change. Changed entries
are reloaded into the policy and devices that lost admission are dropped at once, with their
streams (issue 3: changes take effect within a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from whitelist.audit import BATCH_ACTION
from whitelist.decide import Policy
from whitelist.model import Entry, EntryStatus, PendingEvidence
from whitelist.store import WhitelistStore

log = logging.getLogger(__name__)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def apply_rules(policy: Policy, rules: list[Any]) -> None:
    """Make `policy`'s rules exactly `rules`."""
    for rule in rules:
        policy.upsert_rule(rule)
    known = {r.id for r in rules}
    for rule in list(policy.rules()):
        if rule.id not in known:
            policy.remove_rule(rule.id)


class Admission:
    def __init__(
        self,
        store: WhitelistStore,
        policy: Policy,
        *,
        realm: str,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.realm = realm
        self.poll_interval = poll_interval
        self.clock = clock
        self.on_drop: list[Callable[[str], Any]] = []
        #: After each sync that changed something: (entry or None per changed device ID, the full rule
        #: list when rules changed else None) — how main's SIP workers hear of it at once.
        self.on_change: list[Callable[[dict[str, Entry | None], list[Any] | None], Any]] = []
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._syncing = asyncio.Lock()
        self.reloads = 0

    async def start(self) -> None:
        records = await self.store.audit_records()
        self._seq = records[-1].seq if records else 0
        self._task = asyncio.create_task(self._poll(), name="whitelist-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.sync()
            except Exception:
                log.exception("whitelist sync failed; retrying")

    async def sync(self) -> int:
        """Apply every change recorded since the last sync; returns how many targets changed.

        One sync at a time: the poller and an explicit call would otherwise both read the records
        after the same seq and apply (and drop devices for) each change twice."""
        async with self._syncing:
            return await self._sync()

    async def _sync(self) -> int:
        records = await self.store.audit_records(after_seq=self._seq, limit=5000)
        if not records:
            return 0
        self._seq = records[-1].seq
        targets: set[str] = set()
        for r in records:
            if r.action == BATCH_ACTION:          # a bulk import: its items name what changed
                targets.update(await self.store.batch_targets(r.seq))
            else:
                targets.add(r.target)
        device_ids = [t for t in targets if len(t) == 20 and t.isdigit()]
        found = await self.store.get_many(device_ids)
        for device_id in device_ids:
            self._apply(device_id, found.get(device_id))
        reload_rules = len(device_ids) != len(targets)
        rules: list[Any] | None = None
        if reload_rules:
            rules = list(await self.store.list_rules())
            apply_rules(self.policy, rules)
        self.reloads += 1
        changed = {device_id: found.get(device_id) for device_id in device_ids}
        for callback in self.on_change:
            try:
                callback(changed, rules)
            except Exception:
                log.exception("whitelist change listener failed")
        return len(targets)

    def _apply(self, device_id: str, entry: Entry | None) -> None:
        if entry is None:
            self.policy.remove(device_id)
        else:
            self.policy.upsert(entry)
        if entry is None or entry.status in (EntryStatus.SUSPENDED, EntryStatus.REVOKED):
            self.drop(device_id)

    def drop(self, device_id: str) -> None:
        for callback in self.on_drop:
            try:
                callback(device_id)
            except Exception:
                log.exception("dropping %s failed", device_id)

    # -- called by the device adapter -----------------------------------------------------
    async def record_pending(self, evidence: Mapping[str, Any], now: float) -> None:
        await self.store.record_pending(
            PendingEvidence(
                device_id=str(evidence["device_id"]),
                source=str(evidence.get("source", "")),
                transport=str(evidence.get("transport", "")),
                user_agent=str(evidence.get("user_agent") or "") or None,
            ),
            _dt(now),
        )

    async def audit_event(self, action: str, device_id: str, details: Mapping[str, Any], reason: str) -> None:
        await self.store.append_audit(
            actor="gateway", action=action, target=device_id, before=None, after=dict(details), reason=reason
        )

    async def suspend_for_mismatch(self, device_id: str, evidence: Mapping[str, Any]) -> None:
        """Cloned or replaced camera: suspend (audited) and drop it."""
        await self.store.set_status(
            device_id,
            EntryStatus.SUSPENDED,
            actor="gateway",
            reason=f"DeviceInfo contradicts the expected make/model: {dict(evidence)}",
        )
        self.drop(device_id)

    async def set_status(self, device_id: str, status: EntryStatus, *, actor: str, reason: str = "") -> Entry:
        entry = await self.store.set_status(device_id, status, actor=actor, reason=reason)
        self._apply(device_id, entry)
        return entry
