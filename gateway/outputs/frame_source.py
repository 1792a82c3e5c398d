"""What the WebRTC output reads from: a hub subscription of kind "frames".

Its own module so that `whep` (sessions) and `whep_track` (the aiortc track) both depend on it and
not on each other's insides: `whep` loads `whep_track` lazily, `whep_track` never imports `whep`.
"""

from __future__ import annotations

from typing import Any, Protocol


class FrameSource(Protocol):
    """A hub subscription of kind "frames" (gateway.media.fanout.Subscription)."""

    closed: bool

    def __aiter__(self) -> Any: ...

    def __len__(self) -> int: ...

    def close(self, reason: str = ...) -> None: ...
