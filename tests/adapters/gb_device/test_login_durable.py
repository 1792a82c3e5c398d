"""A new login's 200 goes out only once its online event is durable (the health sink's barrier):
not before it resolves, never if it fails (counted as a task error) or is cancelled, and not
after the adapter stopped. Also with a sink that hands back a coroutine instead of a future."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from gateway.sip import digest
from tests.adapters.gb_device.test_fast_paths import BOUND, FRESH, REALM, full_path, make_rig


class BarrierHealth:
    """set_state hands every event the same pending future, as the journal's barrier does."""

    def __init__(self, *, coroutine: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.barrier: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.coroutine = coroutine

    def set_state(self, subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> Any:
        self.calls.append((subject, state))
        if self.coroutine:
            async def wait() -> None:
                await asyncio.shield(self.barrier)
            return wait()
        return self.barrier


def register(rig: Any, cseq: int, auth: str | None) -> bytes | None:
    lines = [f"REGISTER sip:34020000002000000001@{REALM} SIP/2.0",
             f"Via: SIP/2.0/UDP {BOUND.host}:{BOUND.port};rport;branch=z9hG4bK-{cseq}",
             f"From: <sip:{FRESH}@{REALM}>;tag=1", f"To: <sip:{FRESH}@{REALM}>", "Call-ID: login@x",
             f"CSeq: {cseq} REGISTER", f"Contact: <sip:{FRESH}@{BOUND.host}:{BOUND.port}>", "Expires: 3600"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += ["Content-Length: 0", "", ""]
    return full_path(rig, "\r\n".join(lines).encode(), BOUND)


def login(rig: Any) -> None:
    """REGISTER → 401 → REGISTER with credentials; the second gets no answer yet."""
    challenge = register(rig, 1, None)
    assert challenge is not None and challenge.startswith(b"SIP/2.0 401 ")
    value = re.search(rb"WWW-Authenticate: ([^\r]*)", challenge).group(1).decode()  # type: ignore[union-attr]
    auth = digest.authorization(value, method="REGISTER", uri=f"sip:34020000002000000001@{REALM}",
                                username=FRESH, password="p")
    assert register(rig, 2, auth) is None


def oks(rig: Any) -> int:
    return sum(1 for d in rig.endpoint.sent if d.startswith(b"SIP/2.0 200 "))


def test_the_200_waits_for_the_barrier() -> None:
    async def run() -> None:
        for coroutine in (False, True):
            rig = make_rig(1e9)
            rig.adapter.health = rig.health = BarrierHealth(coroutine=coroutine)
            login(rig)
            for _ in range(5):
                await asyncio.sleep(0)
            assert ("device:" + FRESH, "online") in rig.health.calls
            assert oks(rig) == 0  # not durable yet: no answer
            rig.health.barrier.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
            assert oks(rig) == 1
            assert rig.adapter.stats["task_errors"] == 0
            await rig.adapter._tasks.close()

    asyncio.run(run())


def test_no_200_when_the_barrier_fails_or_is_cancelled_or_after_stop() -> None:
    async def run() -> None:
        for outcome in ("fail", "cancel", "stop"):
            rig = make_rig(1e9)
            rig.adapter.health = rig.health = BarrierHealth()
            login(rig)
            await asyncio.sleep(0)
            assert ("device:" + FRESH, "online") in rig.health.calls
            if outcome == "fail":
                rig.health.barrier.set_exception(OSError("fsync failed"))
            elif outcome == "cancel":
                rig.health.barrier.cancel()
            else:
                await rig.adapter.stop()
                if not rig.health.barrier.done():  # (a cancelled login task may have cancelled it)
                    rig.health.barrier.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
            assert oks(rig) == 0, outcome
            assert rig.adapter.stats["task_errors"] == (1 if outcome == "fail" else 0), outcome
            await rig.adapter._tasks.close()

    asyncio.run(run())
