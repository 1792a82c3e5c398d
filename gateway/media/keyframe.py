"""One keyframe to one picture: what snapshots and picture-quality probes both need.

PyAV is imported on first use (not with the gateway), and `decode_keyframe` blocks: call it in a
worker thread (architecture.md rule 11).
"""

from __future__ import annotations

from typing import Any

from gateway.media.errors import MediaError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import ParameterSets, parameter_sets

START4 = b"\x00\x00\x00\x01"
DECODERS = {Codec.H264: "h264", Codec.H265: "hevc"}


class KeyframeError(MediaError):
    """The keyframe cannot be decoded (unsupported codec, corrupt data, no picture)."""


def complete_keyframe(frame: MediaFrame, known: ParameterSets | None) -> bytes:
    """The keyframe's Annex-B bytes with SPS/PPS (and VPS) in front when it lacks them."""
    ps = parameter_sets(frame.codec, frame.data, frame.nals)
    if ps.complete and (frame.codec != Codec.H265 or ps.vps is not None):
        return frame.data
    if known is None or not known.complete:
        return frame.data
    sets = [s for s in (known.vps if frame.codec == Codec.H265 else None, known.sps, known.pps) if s]
    return b"".join([*(START4 + s for s in sets), frame.data])


def decode_keyframe(codec: Codec, data: bytes) -> Any:
    """One keyframe access unit → the decoded av.VideoFrame. Blocking."""
    import av

    name = DECODERS.get(codec)
    if name is None:
        raise KeyframeError(f"cannot decode {codec.value} video")
    try:
        ctx: Any = av.CodecContext.create(name, "r")
        frames = list(ctx.decode(av.Packet(data)))
        frames += list(ctx.decode(None))  # flush: a decoder may hold the picture back
    except av.error.FFmpegError as exc:
        raise KeyframeError(f"the keyframe does not decode: {exc}") from None
    if not frames:
        raise KeyframeError("the keyframe produced no picture")
    return frames[0]
