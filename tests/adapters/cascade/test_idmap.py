"""Exposed channel IDs: unique across devices, stable, valid IDs of the channel's own kind."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.cascade.idmap import exposed_ids, mapped_id

DIGITS = "0123456789"
channel_ids = st.builds(lambda head, serial: head + serial,
                        st.sampled_from(["34020000001310", "34020000001320", "44010600001311"]),
                        st.text(DIGITS, min_size=6, max_size=6))
device_ids = st.builds(lambda serial: "3402000000132" + serial, st.text(DIGITS, min_size=7, max_size=7))
pairs = st.lists(st.tuples(device_ids, channel_ids), max_size=40)


@given(pairs, st.randoms())
def test_every_pair_gets_a_distinct_valid_id_of_its_kind_whatever_the_order(listed: list[tuple[str, str]],
                                                                             rnd: object) -> None:
    ids = exposed_ids(listed)
    assert set(ids) == set(listed)
    assert len(set(ids.values())) == len(ids)  # unique in the upper's view
    for (_device, channel), exposed in ids.items():
        assert len(exposed) == 20 and exposed.isdigit() and exposed[:14] == channel[:14]
    shuffled = list(reversed(listed))
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert exposed_ids(shuffled) == ids  # stable: a restart lists the store in another order
    for channel in {c for _d, c in listed}:  # one owner keeps the real ID
        assert sum(1 for (_d, c), e in ids.items() if c == channel and e == channel) == 1


def test_the_first_device_keeps_its_id_and_the_other_is_mapped_deterministically() -> None:
    ch = "34020000001310000001"
    ids = exposed_ids([("34020000001320000002", ch), ("34020000001320000001", ch)])
    assert ids[("34020000001320000001", ch)] == ch
    mapped = ids[("34020000001320000002", ch)]
    assert mapped != ch and mapped == mapped_id("34020000001320000002", ch, {ch})
    assert mapped_id("34020000001320000002", ch, {ch, mapped}) != mapped  # probes past a taken ID
