"""PTZCmd bytes of DeviceControl (our notes §4.8 "PTZCmd byte format").

8 bytes as 16 hex digits: A5, 0F (version 0 + check nibble), address low byte,
instruction, data 1, data 2, (data 3 << 4 | address high nibble), checksum = sum mod 256.
Decoding classifies the instruction the way WVP does when forwarding from an upper
platform; the string itself is forwarded unchanged.
"""

from dataclasses import dataclass
from enum import StrEnum

from gateway.gb.errors import PtzError


class PtzGroup(StrEnum):
    """Instruction families by code range (WVP's classification)."""

    PTZ = "ptz"  # 0x00–0x3F
    FI = "fi"  # 0x40–0x4F focus / iris
    PRESET = "preset"  # 0x81–0x83
    CRUISE = "cruise"  # 0x84–0x88
    SCAN = "scan"  # 0x89–0x8A
    AUX = "aux"  # 0x8C–0x8D
    OTHER = "other"


# Instruction bits of the PTZ group (byte 4).
RIGHT, LEFT, DOWN, UP, ZOOM_IN, ZOOM_OUT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
# Focus/iris bits (code 0x40 | bits).
FOCUS_FAR, FOCUS_NEAR, IRIS_OPEN, IRIS_CLOSE = 0x01, 0x02, 0x04, 0x08
PRESET_SET, PRESET_CALL, PRESET_DELETE = 0x81, 0x82, 0x83
CRUISE_ADD, CRUISE_DELETE, CRUISE_SPEED, CRUISE_DWELL, CRUISE_START = 0x84, 0x85, 0x86, 0x87, 0x88
SCAN, SCAN_SPEED = 0x89, 0x8A
AUX_ON, AUX_OFF = 0x8C, 0x8D

STOP = "A50F0100000000B5"


def ptz_cmd(code: int, d1: int = 0, d2: int = 0, d3: int = 0, addr: int = 1) -> str:
    """Encode one command as 16 upper-case hex digits."""
    b = [0xA5, 0x0F, addr & 0xFF, code & 0xFF, d1 & 0xFF, d2 & 0xFF, ((d3 & 0x0F) << 4) | ((addr >> 8) & 0x0F)]
    b.append(sum(b) & 0xFF)
    return bytes(b).hex().upper()


def _clamp(value: int, high: int) -> int:
    return max(0, min(high, int(value)))


def move(
    *, pan: int = 0, tilt: int = 0, zoom: int = 0, pan_speed: int = 0x80, tilt_speed: int = 0x80, zoom_speed: int = 5
) -> str:
    """Continuous move: pan −1 left / +1 right, tilt +1 up / −1 down, zoom +1 in / −1 out.

    Keeps going until `STOP` is sent (§4.8). All zero is the stop command.
    """
    code = 0
    if pan:
        code |= RIGHT if pan > 0 else LEFT
    if tilt:
        code |= UP if tilt > 0 else DOWN
    if zoom:
        code |= ZOOM_IN if zoom > 0 else ZOOM_OUT
    return ptz_cmd(
        code,
        _clamp(pan_speed, 255) if pan else 0,
        _clamp(tilt_speed, 255) if tilt else 0,
        _clamp(zoom_speed, 15) if zoom else 0,
    )


def focus_iris(*, focus: int = 0, iris: int = 0, focus_speed: int = 0x40, iris_speed: int = 0x40) -> str:
    """Focus −1 near / +1 far, iris +1 open / −1 close; all zero stops (code 0x40)."""
    code = 0x40
    if focus:
        code |= FOCUS_FAR if focus > 0 else FOCUS_NEAR
    if iris:
        code |= IRIS_OPEN if iris > 0 else IRIS_CLOSE
    return ptz_cmd(code, _clamp(focus_speed, 255) if focus else 0, _clamp(iris_speed, 255) if iris else 0)


def preset(action: int, number: int) -> str:
    """PRESET_SET / PRESET_CALL / PRESET_DELETE for preset 1–255."""
    if action not in (PRESET_SET, PRESET_CALL, PRESET_DELETE):
        raise PtzError(f"not a preset instruction: {action:#x}")
    if not 1 <= number <= 255:
        raise PtzError(f"preset number {number} out of 1..255")
    return ptz_cmd(action, 0, number)


def cruise(action: int, group: int, value: int = 0) -> str:
    """Cruise instructions; speed/dwell (0x86/0x87) take a 12-bit value split over d2 and d3."""
    if not CRUISE_ADD <= action <= CRUISE_START:
        raise PtzError(f"not a cruise instruction: {action:#x}")
    if action in (CRUISE_SPEED, CRUISE_DWELL):
        v = _clamp(value, 0xFFF)
        return ptz_cmd(action, group, v & 0xFF, v >> 8)
    return ptz_cmd(action, group, _clamp(value, 255))


@dataclass(frozen=True, slots=True)
class PtzCommand:
    """A decoded PTZCmd."""

    code: int
    d1: int
    d2: int
    d3: int
    address: int
    group: PtzGroup


def group_of(code: int) -> PtzGroup:
    if code < 0x40:
        return PtzGroup.PTZ
    if code <= 0x4F:
        return PtzGroup.FI
    if 0x81 <= code <= 0x83:
        return PtzGroup.PRESET
    if 0x84 <= code <= 0x88:
        return PtzGroup.CRUISE
    if 0x89 <= code <= 0x8A:
        return PtzGroup.SCAN
    if 0x8C <= code <= 0x8D:
        return PtzGroup.AUX
    return PtzGroup.OTHER


def decode(text: str) -> PtzCommand:
    """Parse and verify a PTZCmd string; PtzError on length, start byte or checksum."""
    value = text.strip()
    if len(value) != 16:
        raise PtzError(f"PTZCmd must be 16 hex digits, got {len(value)}")
    try:
        b = bytes.fromhex(value)
    except ValueError:
        raise PtzError("PTZCmd is not hexadecimal") from None
    if b[0] != 0xA5:
        raise PtzError("PTZCmd does not start with A5")
    if sum(b[:7]) & 0xFF != b[7]:
        raise PtzError("PTZCmd checksum mismatch")
    return PtzCommand(b[3], b[4], b[5], b[6] >> 4, b[2] | ((b[6] & 0x0F) << 8), group_of(b[3]))


#: The operator's vocabulary (API, console) → (pan, tilt, zoom) of a continuous move.
MOVES: dict[str, tuple[int, int, int]] = {
    "left": (-1, 0, 0), "right": (1, 0, 0), "up": (0, 1, 0), "down": (0, -1, 0),
    "up_left": (-1, 1, 0), "up_right": (1, 1, 0), "down_left": (-1, -1, 0), "down_right": (1, -1, 0),
    "zoom_in": (0, 0, 1), "zoom_out": (0, 0, -1),
}
#: Focus/iris actions → (focus, iris).
LENS: dict[str, tuple[int, int]] = {
    "focus_far": (1, 0), "focus_near": (-1, 0), "iris_open": (0, 1), "iris_close": (0, -1),
}
PRESETS = {"preset_set": PRESET_SET, "preset_call": PRESET_CALL, "preset_delete": PRESET_DELETE}
ACTIONS = (*MOVES, *LENS, *PRESETS, "stop")


def command_for(action: str, *, speed: int = 0x80, preset_number: int | None = None) -> str:
    """The PTZCmd for an operator action; PtzError's message starts with the field that is wrong
    (`action: …`, `speed: …`, `preset: …`). Zoom speed is the 4-bit scale of `speed`."""
    if action not in ACTIONS:
        raise PtzError(f"action: unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if isinstance(speed, bool) or not isinstance(speed, int) or not 1 <= speed <= 255:
        raise PtzError("speed: must be an integer 1..255")
    if action == "stop":
        return STOP
    if action in MOVES:
        pan, tilt, zoom = MOVES[action]
        return move(pan=pan, tilt=tilt, zoom=zoom, pan_speed=speed, tilt_speed=speed, zoom_speed=max(1, speed >> 4))
    if action in LENS:
        focus, iris = LENS[action]
        return focus_iris(focus=focus, iris=iris, focus_speed=speed, iris_speed=speed)
    if preset_number is None or isinstance(preset_number, bool) or not isinstance(preset_number, int):
        raise PtzError("preset: must be an integer 1..255")
    try:
        return preset(PRESETS[action], preset_number)
    except PtzError as exc:
        raise PtzError(f"preset: {exc}") from None
