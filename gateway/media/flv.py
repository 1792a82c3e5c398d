"""FLV muxer: AVC per FLV v10.1, HEVC per Enhanced RTMP/FLV (sans-IO).

References: Adobe "Video File Format Specification v10.1" Annex E (FLV header, tags,
PreviousTagSize, AVCVIDEOPACKET, AACAUDIODATA, onMetaData in AMF0); Veovera "Enhanced RTMP"
v1 (2023) §"Enhanced Video" (ExVideoTagHeader: IsExHeader UB[1] | FrameType UB[3] |
PacketType UB[4], then VideoFourCc 'hvc1'; PacketType 0 SequenceStart carries the
HEVCDecoderConfigurationRecord, 1 CodedFrames carries SI24 CompositionTime + NALUs).

Every tag is returned followed by its PreviousTagSize, so tags concatenate into a valid file and
the bytes of one frame can be shared by every subscriber (architecture §5).
"""

from __future__ import annotations

import struct

from gateway.media.errors import FlvError, NalError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import (
    avcc_record,
    hvcc_record,
    length_prefixed_parts,
    parameter_sets,
)

TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT = 8, 9, 18
AVC_CODEC_ID = 7
HEVC_FOURCC = b"hvc1"
FRAME_KEY, FRAME_INTER = 1, 2
AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE = 0, 1, 2
EX_SEQUENCE_START, EX_CODED_FRAMES, EX_SEQUENCE_END = 0, 1, 2
SOUND_G711A, SOUND_G711U, SOUND_AAC = 7, 8, 10
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_U32 = struct.Struct(">I")
_TAG_HEAD = struct.Struct(">IIxxx")  # type + DataSize, Timestamp + TimestampExtended, StreamID 0


def flv_header(has_video: bool, has_audio: bool) -> bytes:
    """9-byte FLV header (version 1) followed by PreviousTagSize0 = 0."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def flv_tag(tag_type: int, ts_ms: int, body: bytes) -> bytes:
    """One tag: type, DataSize (24), Timestamp (24) + TimestampExtended (8), StreamID 0, body,
    then PreviousTagSize (11 + DataSize)."""
    size = len(body)
    return b"".join((_tag_head(tag_type, ts_ms, size), body, _U32.pack(11 + size)))


def _tag_head(tag_type: int, ts_ms: int, size: int) -> bytes:
    """The 11-byte tag header for a body of `size` bytes."""
    if size > 0xFFFFFF:
        raise FlvError("FLV tag body exceeds 16 MiB")
    ts = ts_ms & 0xFFFFFFFF
    return _TAG_HEAD.pack((tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24))


def _si24(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


# -- AMF0 (Adobe AMF0 spec §2) ---------------------------------------------------------------

def _amf_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def _amf_value(v: object) -> bytes:
    if isinstance(v, bool):
        return b"\x01" + (b"\x01" if v else b"\x00")
    if isinstance(v, int | float):
        return b"\x00" + struct.pack(">d", float(v))
    if isinstance(v, str):
        return b"\x02" + _amf_string(v)
    raise FlvError(f"cannot encode {type(v).__name__} in AMF0")


def amf0_metadata(props: dict[str, object]) -> bytes:
    """Script data body: "onMetaData" + ECMA array."""
    items = b"".join(_amf_string(k) + _amf_value(v) for k, v in props.items())
    return b"\x02" + _amf_string("onMetaData") + b"\x08" + _U32.pack(len(props)) + items + b"\x00\x00\x09"


# -- AAC ---------------------------------------------------------------------------------------

def adts_frames(data: bytes) -> tuple[bytes | None, list[bytes]]:
    """(AudioSpecificConfig, raw AAC frames) from ADTS (ISO/IEC 13818-7 §6.2). Raises FlvError."""
    frames: list[bytes] = []
    asc = None
    pos, n = 0, len(data)
    while pos + 7 <= n:
        if data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
            raise FlvError("ADTS sync lost")
        b2, b3 = data[pos + 2], data[pos + 3]
        flen = ((b3 & 0x03) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        hlen = 7 if data[pos + 1] & 0x01 else 9
        if flen < hlen or pos + flen > n:
            raise FlvError("bad ADTS frame length")
        if asc is None:
            aot, sfi, ch = (b2 >> 6) + 1, (b2 >> 2) & 0x0F, ((b2 & 0x01) << 2) | (b3 >> 6)
            asc = struct.pack(">H", (aot << 11) | (sfi << 7) | (ch << 3))
        frames.append(data[pos + hlen:pos + flen])
        pos += flen
    return asc, frames


class FlvMuxer:
    """MediaFrame → FLV tags for one stream.

    `video_tag` on a key frame whose parameter sets differ from the last sequence header first
    emits a new sequence header tag (so a resolution change reaches players); `audio_tag` does
    the same for AAC's AudioSpecificConfig. `sequence_headers()` gives a late joiner both.
    """

    def __init__(self, video_codec: Codec | None, audio_codec: Codec | None = None) -> None:
        if video_codec not in (None, Codec.H264, Codec.H265):
            raise FlvError(f"FLV cannot carry video {video_codec}")
        if audio_codec not in (None, Codec.G711A, Codec.G711U, Codec.AAC):
            raise FlvError(f"FLV cannot carry audio {audio_codec}")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self._video_config: bytes | None = None  # sequence header tag body
        self._params: tuple[bytes | None, bytes | None, bytes | None] | None = None
        self._audio_config: bytes | None = None  # AAC sequence header tag body

    def header(self) -> bytes:
        return flv_header(self.video_codec is not None, self.audio_codec is not None)

    # -- video -----------------------------------------------------------------------------

    def sequence_header(self, sps: bytes, pps: bytes, vps: bytes | None = None, *, ts_ms: int = 0) -> bytes:
        """Decoder configuration tag: AVC packet type 0 with avcC, or HEVC SequenceStart + hvcC."""
        try:
            if self.video_codec == Codec.H265:
                if vps is None:
                    raise FlvError("HEVC sequence header needs a VPS")
                body = bytes((0x80 | (FRAME_KEY << 4) | EX_SEQUENCE_START,)) + HEVC_FOURCC + \
                    hvcc_record(vps, sps, pps)
            elif self.video_codec == Codec.H264:
                body = bytes(((FRAME_KEY << 4) | AVC_CODEC_ID, AVC_SEQUENCE_HEADER, 0, 0, 0)) + \
                    avcc_record(sps, pps)
            else:
                raise FlvError("no video codec configured")
        except NalError as exc:
            raise FlvError(f"bad parameter sets: {exc}") from exc
        self._video_config = body
        self._params = (vps, sps, pps)
        return flv_tag(TAG_VIDEO, ts_ms, body)

    def video_tag(self, frame: MediaFrame, ts_ms: int) -> bytes:
        """Coded frame tag (AUD and parameter sets moved out of band) with composition time
        (PTS − DTS in ms); preceded by a sequence header when a key frame brings new ones."""
        codec = self.video_codec
        if codec is None or frame.codec != codec:
            raise FlvError(f"video codec {frame.codec} not configured")
        prefix = b""
        data = frame.data
        if frame.keyframe:
            ps = parameter_sets(codec, data, frame.nals)
            if ps.complete and (codec == Codec.H264 or ps.vps is not None) \
                    and (ps.vps, ps.sps, ps.pps) != self._params:
                assert ps.sps is not None and ps.pps is not None
                prefix = self.sequence_header(ps.sps, ps.pps, ps.vps, ts_ms=ts_ms)
        # one join for the whole tag: the NAL units are views of the frame, copied only here
        parts, size = length_prefixed_parts(data if type(data) is bytes else bytes(data), codec, drop_aud=True,
                                            drop_parameter_sets=True, starts=frame.nals)
        if not parts:
            return prefix
        cts = 0
        if frame.pts is not None and frame.dts is not None:
            cts = (frame.pts - frame.dts) // 90
        ftype = FRAME_KEY if frame.keyframe else FRAME_INTER
        if codec == Codec.H265:
            head = bytes((0x80 | (ftype << 4) | EX_CODED_FRAMES,)) + HEVC_FOURCC + _si24(cts)
        else:
            head = bytes(((ftype << 4) | AVC_CODEC_ID, AVC_NALU)) + _si24(cts)
        size += len(head)
        return b"".join((prefix, _tag_head(TAG_VIDEO, ts_ms, size), head, *parts, _U32.pack(11 + size)))

    def end_of_sequence(self, ts_ms: int) -> bytes:
        """AVC end of sequence / HEVC SequenceEnd tag."""
        if self.video_codec == Codec.H265:
            body = bytes((0x80 | (FRAME_KEY << 4) | EX_SEQUENCE_END,)) + HEVC_FOURCC
        else:
            body = bytes(((FRAME_KEY << 4) | AVC_CODEC_ID, AVC_END_OF_SEQUENCE, 0, 0, 0))
        return flv_tag(TAG_VIDEO, ts_ms, body)

    # -- audio -----------------------------------------------------------------------------

    def _audio_flags(self) -> int:
        if self.audio_codec == Codec.AAC:
            return (SOUND_AAC << 4) | (3 << 2) | (1 << 1) | 1  # 0xAF: always 44 kHz/16-bit/stereo
        fmt = SOUND_G711A if self.audio_codec == Codec.G711A else SOUND_G711U
        return (fmt << 4) | (1 << 1)  # 8 kHz is not expressible: rate 0, 16-bit, mono (as ffmpeg)

    def audio_tag(self, frame: MediaFrame, ts_ms: int) -> bytes:
        """G.711: one tag with the samples. AAC: one raw frame per tag (ADTS stripped), the
        AudioSpecificConfig sequence header first when it is new."""
        if self.audio_codec is None or frame.codec != self.audio_codec:
            raise FlvError(f"audio codec {frame.codec} not configured")
        flags = self._audio_flags()
        if self.audio_codec != Codec.AAC:  # the tag in one join, as video_tag
            size = 1 + len(frame.data)
            return b"".join((_tag_head(TAG_AUDIO, ts_ms, size), bytes((flags,)), frame.data, _U32.pack(11 + size)))
        asc, raws = adts_frames(frame.data)
        out = []
        if asc is not None and bytes((flags, 0)) + asc != self._audio_config:
            self._audio_config = bytes((flags, 0)) + asc
            out.append(flv_tag(TAG_AUDIO, ts_ms, self._audio_config))
        step = 0.0
        if asc is not None:
            sfi = (asc[0] & 0x07) << 1 | asc[1] >> 7
            step = 1024_000 / _AAC_RATES[sfi] if sfi < len(_AAC_RATES) else 0.0
        for k, raw in enumerate(raws):
            out.append(flv_tag(TAG_AUDIO, ts_ms + int(k * step), bytes((flags, 1)) + raw))
        return b"".join(out)

    # -- script / joiners ---------------------------------------------------------------------

    def metadata(self, width: int, height: int, fps: float, **extra: object) -> bytes:
        """onMetaData script tag at time 0 (videocodecid 7, or the 'hvc1' FourCC as E-RTMP says)."""
        props: dict[str, object] = {"duration": 0.0, "width": width, "height": height, "framerate": fps}
        if self.video_codec == Codec.H265:
            props["videocodecid"] = int.from_bytes(HEVC_FOURCC, "big")
        elif self.video_codec == Codec.H264:
            props["videocodecid"] = AVC_CODEC_ID
        if self.audio_codec is not None:
            props["audiocodecid"] = {Codec.G711A: SOUND_G711A, Codec.G711U: SOUND_G711U,
                                     Codec.AAC: SOUND_AAC}[self.audio_codec]
            if self.audio_codec != Codec.AAC:
                props.update(audiosamplerate=8000, audiosamplesize=16, stereo=False)
        props.update(extra)
        return flv_tag(TAG_SCRIPT, 0, amf0_metadata(props))

    def sequence_headers(self, ts_ms: int = 0) -> bytes:
        """The current video and audio configuration tags, for a subscriber joining late."""
        parts = []
        if self._video_config is not None:
            parts.append(flv_tag(TAG_VIDEO, ts_ms, self._video_config))
        if self._audio_config is not None:
            parts.append(flv_tag(TAG_AUDIO, ts_ms, self._audio_config))
        return b"".join(parts)
