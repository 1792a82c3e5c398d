"""A lower platform's allowed channel IDs on its whitelist entry (issue 14 #2): parsing, storing,
importing. Every expected value is written out by hand."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from whitelist.bundle import parse_csv, parse_json
from whitelist.errors import ValidationError, ValidationErrors
from whitelist.model import Entry
from whitelist.ranges import format_channel_ranges, in_channel_ranges, parse_channel_ranges
from whitelist.store import WhitelistStore

PLAT = "34020000002000000001"
LO, HI = "34020000001310000001", "34020000001310000244"
ONE = "34020000001310000900"


def test_parse_ranges_and_single_ids() -> None:
    assert parse_channel_ranges(f"{LO}-{HI}") == ((LO, HI),)
    # several, any of , ; or spaces between them; a single ID is its own range; sorted, deduplicated
    assert parse_channel_ranges(f" {ONE} ; {LO}-{HI},{ONE}") == ((LO, HI), (ONE, ONE))
    assert parse_channel_ranges([f"{LO}-{HI}", ONE]) == ((LO, HI), (ONE, ONE))
    assert parse_channel_ranges([(LO, HI)]) == ((LO, HI),)
    assert parse_channel_ranges(None) == parse_channel_ranges("") == ()
    assert format_channel_ranges(((LO, HI), (ONE, ONE))) == f"{LO}-{HI},{ONE}"


@pytest.mark.parametrize(
    "bad",
    [
        "3402000000131000001-34020000001310000244",  # 19 digits
        f"{HI}-{LO}",  # starts after it ends
        f"{LO}-",  # no upper end
        "３４０２０００００００１３１００００００１",  # full-width digits are not ASCII digits
        f"{LO}-{HI}-{ONE}",
        12345,
    ],
)
def test_bad_ranges_name_the_field(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_channel_ranges(bad)
    assert info.value.field == "channel_ranges"
    with pytest.raises(ValidationError) as info:
        Entry(device_id=PLAT, channel_ranges=bad)  # type: ignore[arg-type]
    assert info.value.field == "channel_ranges"


def test_membership_bounds_are_inclusive() -> None:
    r = parse_channel_ranges(f"{LO}-{HI},{ONE}")
    assert in_channel_ranges(r, LO) and in_channel_ranges(r, HI) and in_channel_ranges(r, ONE)
    assert not in_channel_ranges(r, "34020000001310000000")  # one below LO
    assert not in_channel_ranges(r, "34020000001310000245")  # one above HI
    assert not in_channel_ranges(r, "34020000001310000901")
    assert in_channel_ranges((), "34020000001310000245")  # no ranges: any ID
    e = Entry(device_id=PLAT, channel_ranges=f"{LO}-{HI}")  # type: ignore[arg-type]
    assert e.channel_allowed(HI) and not e.channel_allowed(ONE)


def test_entry_dict_round_trip_keeps_ranges() -> None:
    e = Entry(device_id=PLAT, max_channels=244, channel_ranges=((LO, HI), (ONE, ONE)))
    d = e.to_dict(include_credential=True)
    assert d["channel_ranges"] == f"{LO}-{HI},{ONE}"
    assert Entry.from_dict(d) == e
    old = {k: v for k, v in d.items() if k != "channel_ranges"}  # a bundle from before the field
    assert Entry.from_dict(old).channel_ranges == ()


def test_csv_and_json_imports_take_the_column() -> None:
    csv = (
        "device_id,name,password,max_channels,channel_ranges\n"
        f'{PLAT},车站平台,pw,244,"{LO}-{HI},{ONE}"\n'
        "34020000002000000002,无限制,pw,,\n"
    )
    a, b = parse_csv(csv, realm="3402000000")
    assert (a.max_channels, a.channel_ranges) == (244, ((LO, HI), (ONE, ONE)))
    assert b.channel_ranges == ()
    (j,) = parse_json(f'[{{"device_id": "{PLAT}", "channel_ranges": ["{LO}-{HI}"]}}]', realm="r")
    assert j.channel_ranges == ((LO, HI),)


def test_csv_import_names_the_bad_line_and_field() -> None:
    csv = f"device_id,channel_ranges\n{PLAT},{LO}-{HI}\n34020000002000000002,{HI}-{LO}\n"
    with pytest.raises(ValidationErrors) as info:
        parse_csv(csv, realm="r")
    assert [(e.line, e.field) for e in info.value.errors] == [(3, "channel_ranges")]


async def test_store_keeps_the_ranges(engine: AsyncEngine) -> None:
    """Saved one by one and by bulk import, read back by get and by a fresh policy load."""
    store = WhitelistStore(async_sessionmaker(engine, expire_on_commit=False))
    await store.save_entry(Entry(device_id=PLAT, channel_ranges=((LO, HI),)), actor="test", action="add")
    other = "34020000002000000002"
    await store.import_entries([Entry(device_id=other, channel_ranges=((ONE, ONE),))], actor="test")
    assert (await store.get(PLAT)).channel_ranges == ((LO, HI),)  # type: ignore[union-attr]
    policy = await WhitelistStore(async_sessionmaker(engine, expire_on_commit=False)).load_policy()
    assert policy.get(PLAT).channel_ranges == ((LO, HI),)  # type: ignore[union-attr]
    assert policy.get(other).channel_ranges == ((ONE, ONE),)  # type: ignore[union-attr]
