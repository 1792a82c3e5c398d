import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gb import ptz
from gateway.gb.errors import GbError, PtzError

# Worked commands from our notes §4.8 (checksums computed there).
WORKED = [
    (ptz.STOP, ptz.move()),
    ("A50F01080080003D", ptz.move(tilt=1)),
    ("A50F010180000036", ptz.move(pan=1)),
    ("A50F010A6060007F", ptz.move(pan=-1, tilt=1, pan_speed=0x60, tilt_speed=0x60)),
    ("A50F011000005015", ptz.move(zoom=1)),
    ("A50F012000005025", ptz.move(zoom=-1)),
    ("A50F014400400039", ptz.focus_iris(iris=1)),
    ("A50F014140000036", ptz.focus_iris(focus=1)),
    ("A50F018100030039", ptz.preset(ptz.PRESET_SET, 3)),
    ("A50F01820003003A", ptz.preset(ptz.PRESET_CALL, 3)),
    ("A50F01830003003B", ptz.preset(ptz.PRESET_DELETE, 3)),
    ("A50F01840103003D", ptz.cruise(ptz.CRUISE_ADD, 1, 3)),
    ("A50F0186012C1078", ptz.cruise(ptz.CRUISE_SPEED, 1, 300)),
    ("A50F01880100003E", ptz.cruise(ptz.CRUISE_START, 1)),
    ("A50F01890100003F", ptz.ptz_cmd(ptz.SCAN, 1, 0)),
    ("A50F018C01000042", ptz.ptz_cmd(ptz.AUX_ON, 1, 0)),
]


@pytest.mark.parametrize(("expected", "built"), WORKED)
def test_worked_commands(expected, built):
    assert built == expected
    ptz.decode(expected)  # checksum verifies


def test_decode_classifies():
    cmd = ptz.decode("A50F0186012C1078")
    assert (cmd.code, cmd.d1, cmd.d2, cmd.d3, cmd.address, cmd.group) == (0x86, 1, 0x2C, 1, 1, ptz.PtzGroup.CRUISE)
    assert ptz.decode(ptz.STOP).group is ptz.PtzGroup.PTZ
    assert ptz.decode("A50F014400400039").group is ptz.PtzGroup.FI
    assert ptz.decode("a50f01820003003a").group is ptz.PtzGroup.PRESET


@pytest.mark.parametrize("bad", ["", "A50F0100000000B6", "A50F0100000000", "B50F0100000000C5", "A50F01000000zzB5"])
def test_decode_rejects(bad):
    with pytest.raises(PtzError):
        ptz.decode(bad)


def test_argument_checks():
    with pytest.raises(GbError):
        ptz.preset(ptz.PRESET_CALL, 0)
    with pytest.raises(GbError):
        ptz.preset(0x01, 3)
    with pytest.raises(GbError):
        ptz.cruise(0x81, 1)


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 15), st.integers(0, 0xFFF))
def test_encode_decode_round_trip(code, d1, d2, d3, addr):
    cmd = ptz.decode(ptz.ptz_cmd(code, d1, d2, d3, addr))
    assert (cmd.code, cmd.d1, cmd.d2, cmd.d3, cmd.address) == (code, d1, d2, d3, addr)


def test_operator_actions_map_to_the_worked_commands():
    assert ptz.command_for("stop") == ptz.STOP
    assert ptz.command_for("up") == "A50F01080080003D"            # tilt up at 0x80, as §4.8 works it
    assert ptz.command_for("right") == "A50F010180000036"
    assert ptz.command_for("up_left", speed=0x60) == "A50F010A6060007F"
    assert ptz.command_for("zoom_in", speed=0x50) == "A50F011000005015"
    assert ptz.command_for("iris_open", speed=0x40) == "A50F014400400039"
    assert ptz.command_for("preset_call", preset_number=3) == "A50F01820003003A"


@pytest.mark.parametrize(("action", "kw", "words"), [
    ("spin", {}, "unknown action"),
    ("left", {"speed": 0}, "speed"),
    ("left", {"speed": 256}, "speed"),
    ("left", {"speed": True}, "speed"),
    ("preset_call", {}, "preset"),
    ("preset_call", {"preset_number": 0}, "preset"),
    ("preset_set", {"preset_number": 256}, "preset"),
])
def test_bad_operator_actions_are_refused_naming_the_field(action, kw, words):
    with pytest.raises(PtzError, match=words):
        ptz.command_for(action, **kw)


@given(st.sampled_from(ptz.ACTIONS), st.integers(1, 255), st.integers(1, 255))
def test_every_action_encodes_a_valid_command(action, speed, number):
    cmd = ptz.decode(ptz.command_for(action, speed=speed, preset_number=number))
    if action in ptz.MOVES:
        assert cmd.group is ptz.PtzGroup.PTZ and cmd.code != 0
    elif action in ptz.LENS:
        assert cmd.group is ptz.PtzGroup.FI
    elif action in ptz.PRESETS:
        assert (cmd.group, cmd.d2) == (ptz.PtzGroup.PRESET, number)
    else:
        assert cmd.code == 0
