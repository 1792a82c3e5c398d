"""Catalog assembly (§4.4): duplicates, order, timeouts, SumNum 0, skipped items; reconciliation."""

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.gb import manscdp
from gateway.gb.catalog import CatalogAssembler, CatalogDiff, diff_catalog
from gateway.gb.items import CatalogItem
from gateway.gb.manscdp import CatalogPage

DATA = Path(__file__).parents[2] / "data" / "manscdp"
NVR = "44010600001180000001"


def page_file(name: str) -> CatalogPage:
    return manscdp.catalog_response(manscdp.parse((DATA / name).read_bytes()))


def item(n: int, name: str = "cam") -> CatalogItem:
    return CatalogItem(device_id=f"4401060000131{n:07d}", name=name)


def page(sn: int, sum_num: int, *ns: int, skipped: int = 0, dev: str = NVR) -> CatalogPage:
    return CatalogPage(dev, sn, sum_num, [item(n) for n in ns], skipped)


def test_three_page_vector_with_retransmitted_item():
    asm = CatalogAssembler()
    asm.start(NVR, 271834, now=0.0)
    assert asm.feed(page_file("catalog_page1_gb2312.xml"), 0.5) is None
    assert asm.feed(page_file("catalog_page2_gb2312.xml"), 0.6) is None
    result = asm.feed(page_file("catalog_page3_gb2312.xml"), 0.7)
    assert result is not None and result.complete
    assert result.sum_num == 4 and result.missing == 0 and result.pages == 3
    assert [i.name for i in result.items] == ["大门入口", "停车场球机", "一楼大厅", "电梯厅"]
    assert asm.next_timer() is None
    assert len(asm) == 0


def test_out_of_order_pages():
    asm = CatalogAssembler()
    asm.start(NVR, 7, 0.0)
    assert asm.feed(page(7, 5, 4, 5), 1.0) is None
    assert asm.feed(page(7, 5, 1), 1.1) is None
    result = asm.feed(page(7, 5, 2, 3), 1.2)
    assert result is not None and result.complete
    assert sorted(i.device_id for i in result.items) == sorted(item(n).device_id for n in (1, 2, 3, 4, 5))


def test_duplicates_do_not_complete_early_and_last_copy_wins():
    asm = CatalogAssembler()
    asm.start(NVR, 8, 0.0)
    assert asm.feed(page(8, 3, 1, 2), 0.1) is None
    dup = CatalogPage(NVR, 8, 3, [item(1, "renamed"), item(2)], 0)
    assert asm.feed(dup, 0.2) is None  # still 2 distinct of 3
    result = asm.feed(page(8, 3, 3), 0.3)
    assert result is not None and result.complete and len(result.items) == 3
    assert result.items[0].name == "renamed"


def test_missing_packet_commits_incomplete_on_idle_timeout():
    asm = CatalogAssembler(idle_timeout=5.0, first_timeout=120.0)
    asm.start(NVR, 9, 0.0)
    assert asm.next_timer() == 120.0
    assert asm.feed(page(9, 4, 1, 2), 10.0) is None
    assert asm.next_timer() == 15.0
    assert asm.handle_timer(14.9) == []
    results = asm.handle_timer(15.0)
    assert len(results) == 1
    res = results[0]
    assert (res.complete, res.missing, res.sum_num, len(res.items)) == (False, 2, 4, 2)
    assert asm.next_timer() is None
    # The missing page arriving late is ignored as a retransmission, not a new catalog.
    assert asm.feed(page(9, 4, 3, 4), 16.0) is None
    assert asm.next_timer() is None


def test_no_answer_at_all_times_out_after_first_timeout():
    asm = CatalogAssembler(first_timeout=120.0)
    asm.start(NVR, 10, 0.0)
    assert asm.handle_timer(119.0) == []
    [res] = asm.handle_timer(120.0)
    assert (res.complete, res.pages, res.items, res.missing) == (False, 0, [], 0)


def test_sumnum_zero_completes_immediately():
    asm = CatalogAssembler()
    asm.start("44010600001320000101", 10, 0.0)
    result = asm.feed(page_file("catalog_sumnum0.xml"), 0.1)
    assert result is not None and result.complete and result.items == [] and result.sum_num == 0


def test_item_without_device_id_is_skipped_then_timeout():
    asm = CatalogAssembler(idle_timeout=5.0)
    pg = page_file("catalog_item_without_deviceid.xml")
    assert pg.skipped == 1
    assert asm.feed(pg, 0.0) is None  # 1 distinct of SumNum 2: never completes by count
    [res] = asm.handle_timer(5.0)
    assert not res.complete and res.missing == 1 and res.skipped == 1
    assert [i.device_id for i in res.items] == ["44010600001310000001"]


def test_unsolicited_push_accepted_and_keyed_per_device():
    asm = CatalogAssembler()
    other = "44010600001180000002"
    assert asm.feed(page(1, 2, 1, dev=NVR), 0.0) is None
    assert asm.feed(page(1, 2, 5, dev=other), 0.0) is None  # same SN, other device
    assert len(asm) == 2
    res = asm.feed(page(1, 2, 2, dev=NVR), 0.1)
    assert res is not None and res.device_id == NVR and res.complete
    assert len(asm) == 1


def test_sn_reuse_after_linger_is_a_new_catalog():
    asm = CatalogAssembler(done_linger=30.0)
    assert asm.feed(page(3, 1, 1), 0.0) is not None
    assert asm.feed(page(3, 1, 1), 10.0) is None  # retransmission
    assert asm.feed(page(3, 1, 2), 31.0) is not None  # later reuse of the SN
    asm.start(NVR, 3, 32.0)  # an explicit new query also clears the linger
    assert asm.feed(page(3, 1, 7), 32.1) is not None


def test_max_items_bounds_memory():
    asm = CatalogAssembler(max_items=3)
    assert asm.feed(page(4, 1000, 1, 2, 3, 4, 5), 0.0) is None
    [res] = asm.handle_timer(100.0)
    assert len(res.items) == 3


def test_cancel_drops_without_result():
    asm = CatalogAssembler()
    asm.start(NVR, 5, 0.0)
    asm.cancel(NVR, 5)
    assert asm.next_timer() is None and asm.handle_timer(1000.0) == []


def test_diff_catalog():
    old = {i.device_id: i for i in (item(1), item(2), item(3))}
    new = [item(2), item(3, "renamed"), item(4), item(4)]
    diff = diff_catalog(old, new)
    assert diff == CatalogDiff(
        added=[item(4)], updated=[item(3, "renamed")], removed=[item(1).device_id], unchanged=1
    )
    assert diff_catalog(old, []).removed == list(old)


@given(
    st.lists(st.integers(0, 30), max_size=40),
    st.integers(1, 6),
    st.randoms(use_true_random=False),
)
def test_assembly_property(ids, per_page, rnd):
    """Any split, order and duplication: complete iff every distinct ID arrived, no ID lost."""
    distinct = sorted(set(ids))
    sum_num = len(distinct)
    chunks = [ids[i : i + per_page] for i in range(0, len(ids), per_page)] or [[]]
    rnd.shuffle(chunks)
    asm = CatalogAssembler()
    result = None
    for t, chunk in enumerate(chunks):
        out = asm.feed(page(77, sum_num, *chunk), float(t))
        if out is not None:
            assert result is None
            result = out
    if result is None:
        [result] = asm.handle_timer(10_000.0)
    assert result.complete
    assert sorted(i.device_id for i in result.items) == [item(n).device_id for n in distinct]
