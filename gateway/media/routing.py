"""The hub's one opener when channels come from several kinds of source (GB INVITE, RTSP pull, …).

`RoutedOpener` asks each route in turn whether it owns the channel (a dictionary lookup for pull
sources) and opens through the first that does, else through the default (the GB INVITE
manager). The hub stays ignorant of source kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.media.hub import Stream, StreamHandle, StreamOpener


class RoutedOpener:
    """StreamOpener dispatching by channel ID."""

    __slots__ = ("default", "routes")

    def __init__(self, default: StreamOpener) -> None:
        self.default = default
        self.routes: list[tuple[Callable[[str], bool], StreamOpener]] = []

    def add(self, owns: Callable[[str], bool], opener: StreamOpener) -> None:
        self.routes.append((owns, opener))

    def opener_for(self, channel_id: str) -> StreamOpener:
        for owns, opener in self.routes:
            if owns(channel_id):
                return opener
        return self.default

    async def open(self, channel_id: str, sink: Stream) -> StreamHandle:
        return await self.opener_for(channel_id).open(channel_id, sink)
