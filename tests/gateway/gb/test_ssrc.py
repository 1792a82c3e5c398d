import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gb.errors import GbError, SsrcExhausted
from gateway.gb.ssrc import SsrcAllocator, ssrc_to_hex, ssrc_to_int


def test_notes_examples():
    alloc = SsrcAllocator("4401060000")
    assert alloc.allocate() == "0106000001"
    assert alloc.allocate(live=False) == "1106000002"
    assert ssrc_to_int("0106000001") == 106000001 == 0x06516E81
    assert ssrc_to_int("1106000002") == 0x41EC3882
    assert ssrc_to_hex("0106000001") == "06516E81"
    assert ssrc_to_int("1999999999") < 2**32


def test_domain_from_server_id_and_bad_domain():
    assert SsrcAllocator("44010600002000000001").middle == "10600"
    for bad in ("440106", "44010600x0", ""):
        with pytest.raises(GbError):
            SsrcAllocator(bad)


def test_release_reserve_contains():
    alloc = SsrcAllocator("3402000000")
    a = alloc.allocate()
    assert a in alloc and len(alloc) == 1
    assert alloc.release(a) and a not in alloc
    assert not alloc.release(a)
    assert not alloc.release("0999990001")  # other domain
    assert alloc.reserve("1200000042") and "0200000042" in alloc  # serial shared by live/history
    assert not alloc.reserve("0200000042")
    assert not alloc.reserve("garbage")


def test_round_robin_no_immediate_reuse():
    alloc = SsrcAllocator("3402000000")
    a = alloc.allocate()
    alloc.release(a)
    assert alloc.allocate() != a


def test_exhaustion_and_recovery():
    alloc = SsrcAllocator("3402000000")
    seen = {alloc.allocate(live=bool(i % 2)) for i in range(10_000)}
    assert len({s[6:] for s in seen}) == 10_000
    with pytest.raises(SsrcExhausted):
        alloc.allocate()
    victim = sorted(seen)[1234]
    alloc.release(victim)
    assert alloc.allocate()[6:] == victim[6:]


@pytest.mark.parametrize("bad", ["", "12345678901", "42949672960", "4294967296", "12a", "-1", " "])
def test_ssrc_to_int_rejects(bad):
    with pytest.raises(GbError):
        ssrc_to_int(bad)


@given(st.integers(0, 2**32 - 1))
def test_ssrc_int_round_trip(value):
    assert ssrc_to_int(f"{value:010d}") == value


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=200))
def test_allocated_always_unique(ops):
    alloc = SsrcAllocator("4401060000")
    live: set[str] = set()
    for do_alloc, is_live in ops:
        if do_alloc or not live:
            s = alloc.allocate(is_live)
            assert s[6:] not in {x[6:] for x in live}
            assert len(s) == 10 and s[1:6] == "10600" and s[0] == ("0" if is_live else "1")
            live.add(s)
        else:
            assert alloc.release(live.pop())
    assert len(alloc) == len(live)
