"""GB/T 28181 20-digit identifiers (编码规则; our notes §1).

Layout: centre code [0:8] + industry [8:10] + type [10:13] + network [13] + serial [14:20].
IDs of 2/4/6/8 digits are administrative-region catalog nodes (行政区划, §1.1).
"""

from enum import StrEnum

from gateway.gb.errors import InvalidId

ID_LENGTH = 20

#: Type codes a gateway can INVITE for video: 131 camera, 132 network camera (§1.2).
PLAYABLE_TYPES = frozenset({131, 132})


class IdKind(StrEnum):
    """What a catalog/registration ID denotes, from its length and type code (§1.6 rule 3)."""

    DEVICE = "device"  # 111–130 front-end main device (DVR, NVR, encoder…)
    CHANNEL = "channel"  # 131–199 front-end peripheral (camera, IPC, alarm input…)
    PLATFORM = "platform"  # 200–299 platform devices except 215/216
    BUSINESS_GROUP = "business_group"  # 215 业务分组
    VIRTUAL_ORG = "virtual_org"  # 216 虚拟组织
    REGION = "region"  # ≤ 8 digits
    OTHER = "other"


def _is_digits(text: str) -> bool:
    # str.isdigit alone accepts non-ASCII digits such as '٣'.
    return text.isascii() and text.isdigit()


def validate_id(text: str) -> str:
    """Return `text` stripped if it is exactly 20 ASCII digits, else raise InvalidId."""
    if not isinstance(text, str):
        raise InvalidId(f"GB ID must be a string, got {type(text).__name__}")
    value = text.strip()
    if not value:
        raise InvalidId("GB ID is empty")
    if not _is_digits(value):
        raise InvalidId(f"GB ID {value[:40]!r} contains characters other than ASCII digits")
    if len(value) != ID_LENGTH:
        raise InvalidId(f"GB ID {value!r} has {len(value)} digits, expected {ID_LENGTH}")
    return value


def is_valid_id(text: object) -> bool:
    """True if `text` is a string of exactly 20 ASCII digits (after stripping)."""
    if not isinstance(text, str):
        return False
    value = text.strip()
    return len(value) == ID_LENGTH and _is_digits(value)


def type_code(id: str) -> int:
    """Digits 11–13 (1-based) of a 20-digit ID, e.g. 132 for an IPC."""
    return int(validate_id(id)[10:13])


def domain_of(id: str) -> str:
    """The SIP domain (SIP域): first 10 digits, centre code + industry code (§1.5)."""
    return validate_id(id)[:10]


def kind_of(id: str) -> IdKind:
    """Classify a catalog or registration ID; never raises (junk → OTHER)."""
    if not isinstance(id, str):
        return IdKind.OTHER
    value = id.strip()
    if not value or not _is_digits(value):
        return IdKind.OTHER
    if len(value) <= 8:
        return IdKind.REGION
    if len(value) != ID_LENGTH:
        return IdKind.OTHER
    code = int(value[10:13])
    if 111 <= code <= 130:
        return IdKind.DEVICE
    if 131 <= code <= 199:
        return IdKind.CHANNEL
    if code == 215:
        return IdKind.BUSINESS_GROUP
    if code == 216:
        return IdKind.VIRTUAL_ORG
    if 200 <= code <= 299:
        return IdKind.PLATFORM
    return IdKind.OTHER


def is_playable_channel(id: str, *, lenient: bool = False) -> bool:
    """True if the ID names a video channel we may INVITE.

    Strict: type 131/132 only. `lenient=True` applies WVP's test `130 < type < 199`
    (any front-end peripheral), useful for lower platforms with odd numbering.
    """
    if not is_valid_id(id):
        return False
    code = int(id.strip()[10:13])
    if lenient:
        return 130 < code < 199
    return code in PLAYABLE_TYPES
