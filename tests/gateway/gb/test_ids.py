import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gb.errors import GbError, InvalidId
from gateway.gb.ids import (
    IdKind,
    domain_of,
    is_playable_channel,
    is_valid_id,
    kind_of,
    type_code,
    validate_id,
)

IPC = "44010600001320000101"
IPC_CHANNEL = "44010600001310000101"
NVR = "44010600001180000001"
PLATFORM = "44010600002000000001"


def test_validate_strips_and_returns():
    assert validate_id(f"  {IPC}\r\n") == IPC


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("4401060000132000010", "19 digits"),
        ("440106000013200001011", "21 digits"),
        ("4401060000132000010a", "other than ASCII digits"),
        ("44010600001320000１01", "other than ASCII digits"),  # full-width digit
        ("4401060000132000010٣", "other than ASCII digits"),  # Arabic-Indic digit
        ("44010600 01320000101", "other than ASCII digits"),
    ],
)
def test_validate_rejects_and_names_problem(text, needle):
    with pytest.raises(InvalidId, match=needle):
        validate_id(text)
    assert not is_valid_id(text)


def test_invalid_id_is_gb_error_and_non_str_refused():
    with pytest.raises(GbError):
        validate_id(12345678901234567890)  # type: ignore[arg-type]
    assert not is_valid_id(None)


def test_type_code_and_domain():
    assert type_code(IPC) == 132
    assert type_code(IPC_CHANNEL) == 131
    assert type_code(NVR) == 118
    assert domain_of(PLATFORM) == "4401060000"
    with pytest.raises(InvalidId):
        type_code("440106")


@pytest.mark.parametrize(
    ("id_", "kind"),
    [
        (NVR, IdKind.DEVICE),
        ("44010600001110000001", IdKind.DEVICE),
        ("44010600001300000001", IdKind.DEVICE),
        (IPC, IdKind.CHANNEL),
        (IPC_CHANNEL, IdKind.CHANNEL),
        ("44010600001340000001", IdKind.CHANNEL),
        ("44010600001990000001", IdKind.CHANNEL),
        (PLATFORM, IdKind.PLATFORM),
        ("44010600002090000001", IdKind.PLATFORM),
        ("44010600002150000001", IdKind.BUSINESS_GROUP),
        ("44010600002160000001", IdKind.VIRTUAL_ORG),
        ("44", IdKind.REGION),
        ("4401", IdKind.REGION),
        ("440106", IdKind.REGION),
        ("44010600", IdKind.REGION),
        ("4401060000", IdKind.OTHER),
        ("44010600003000000001", IdKind.OTHER),
        ("44010600001100000001", IdKind.OTHER),
        ("abc", IdKind.OTHER),
        ("", IdKind.OTHER),
    ],
)
def test_kind_of(id_, kind):
    assert kind_of(id_) is kind


def test_playable():
    assert is_playable_channel(IPC_CHANNEL)
    assert is_playable_channel(IPC)
    assert not is_playable_channel("44010600001340000001")  # alarm input
    assert is_playable_channel("44010600001340000001", lenient=True)
    assert not is_playable_channel("44010600001990000001", lenient=True)  # WVP: 130 < t < 199
    assert not is_playable_channel(NVR, lenient=True)
    assert not is_playable_channel("440106")


@given(st.text(alphabet="0123456789", min_size=20, max_size=20))
def test_any_twenty_digits_valid(text):
    assert validate_id(text) == text
    assert type_code(text) == int(text[10:13])
    assert domain_of(text) == text[:10]
    assert kind_of(text) in set(IdKind) - {IdKind.REGION}


@given(st.text(max_size=30))
def test_validate_only_raises_invalid_id(text):
    try:
        out = validate_id(text)
    except InvalidId:
        assert not is_valid_id(text)
    else:
        assert is_valid_id(text)
        assert len(out) == 20 and out.isascii() and out.isdigit()
    assert isinstance(kind_of(text), IdKind)  # never raises
