"""A stream's life as a table (architecture.md rule 4): opening → live ⇄ reinviting → closed.

    opening ──ready──► live ──reinvite──► reinviting ──ready / media──► live
       │                 │                    │
       └──reinvite───────┼────────────────────┘ (an INVITE retry before the first keyframe)
                         ▼
    any state ──close──► closed (terminal: absorbs every later input)

`ready` is the first keyframe (plus one frame, so audio is known), `media` a frame after that.
The values are the strings the API and the console show (`GET /api/streams` "state").
"""

from __future__ import annotations

from enum import StrEnum


class StreamState(StrEnum):
    OPENING = "opening"  # INVITE sent, no keyframe yet
    LIVE = "live"  # frames flowing to viewers
    REINVITING = "reinviting"  # media lost, the opener is INVITing again; viewers stay
    CLOSED = "closed"  # ingest hung up; terminal


class StreamInput(StrEnum):
    READY = "ready"
    MEDIA = "media"
    REINVITE = "reinvite"
    CLOSE = "close"


_S, _I = StreamState, StreamInput
TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (_S.OPENING, _I.READY): _S.LIVE,
    (_S.OPENING, _I.MEDIA): _S.LIVE,
    (_S.OPENING, _I.REINVITE): _S.REINVITING,
    (_S.OPENING, _I.CLOSE): _S.CLOSED,
    (_S.LIVE, _I.READY): _S.LIVE,
    (_S.LIVE, _I.MEDIA): _S.LIVE,
    (_S.LIVE, _I.REINVITE): _S.REINVITING,
    (_S.LIVE, _I.CLOSE): _S.CLOSED,
    (_S.REINVITING, _I.READY): _S.LIVE,
    (_S.REINVITING, _I.MEDIA): _S.LIVE,
    (_S.REINVITING, _I.REINVITE): _S.REINVITING,
    (_S.REINVITING, _I.CLOSE): _S.CLOSED,
    **{(_S.CLOSED, i): _S.CLOSED for i in StreamInput},
}


def next_state(state: StreamState, event: StreamInput) -> StreamState:
    """The state after `event`; the table is total, so every pair has an answer."""
    return TRANSITIONS[(state, event)]
