"""Health rules fed by other planes: a media outcome turns into a channel's health state.

Kept here, not in the composition root, so the rule is named, documented and testable without a node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.health.recorder import HealthRecorder
from gateway.health.timeline import State


@dataclass(slots=True)
class NoVideoRule:
    """`no_video` when signalling is up but a play request got no decodable video (issue 5 §1);
    back to `online` when video arrives again. Plugged into `StreamHub.on_video`."""

    health: HealthRecorder
    clock: Callable[[], float]

    def __call__(self, channel_id: str, ok: bool, cause: str, evidence: dict[str, Any]) -> None:
        subject = f"channel:{channel_id}"
        current = self.health.state_of(subject)
        if not ok and current is State.online:
            self.health.set_state(subject, State.no_video, cause, self.clock(), evidence)
        elif ok and current is State.no_video:
            self.health.set_state(subject, State.online, cause, self.clock(), evidence)
