"""The platform catalog tree (gateway.gb.tree): every channel once, no cycles, bounded depth."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gb.tree import MAX_DEPTH, TreeItem, TreeNode, build_tree, count_channels

ROOT = "34020000002000000001"


def _node(i: int, kind: str = "virtual_org") -> str:
    return f"3402000000216{i:07d}"


def _chan(i: int) -> str:
    return f"3402000000132{i:07d}"


def _walk(root: TreeNode) -> list[tuple[TreeNode, int]]:
    out, stack = [], [(root, 0)]
    while stack:
        n, d = stack.pop()
        out.append((n, d))
        stack.extend((c, d + 1) for c in n.children)
    return out


def test_nested_groups_and_orphans() -> None:
    bg = "34020000002150000001"
    vo = "34020000002160000001"
    nodes = [
        TreeItem(id=ROOT, kind="platform", name="station"),  # the platform listing itself
        TreeItem(id=bg, kind="business_group", name="车站", parent_id=ROOT),
        TreeItem(id=vo, kind="virtual_org", name="站台", parent_id=ROOT, business_group_id=bg),
        TreeItem(id="3402", kind="region", name="合肥"),
    ]
    channels = [
        TreeItem(id=_chan(1), kind="channel", name="cam1", parent_id=vo, status="ON"),
        TreeItem(id=_chan(2), kind="channel", name="cam2", parent_id=f"{bg}/{vo}", status="OFF"),
        TreeItem(id=_chan(3), kind="channel", name="cam3", parent_id="99999999999999999999"),
        TreeItem(id=_chan(4), kind="channel", name="cam4", civil_code="3402"),
    ]
    tree = build_tree(ROOT, "station", nodes, channels).as_dict()
    assert tree["id"] == ROOT and tree["kind"] == "platform"
    top = {c["id"]: c for c in tree["children"]}
    # the virtual org's ParentID is the root but its BusinessGroupID is not consulted first: ParentID wins
    assert set(top) == {bg, vo, "3402", _chan(3)}
    assert [c["id"] for c in top[vo]["children"]] == [_chan(1), _chan(2)]
    leaf = {"id": _chan(1), "kind": "channel", "name": "cam1", "status": "ON", "exposed": True}
    assert top[vo]["children"][0] == leaf
    assert [c["id"] for c in top["3402"]["children"]] == [_chan(4)]


def test_parent_loop_is_cut() -> None:
    a, b, c = _node(1), _node(2), _node(3)
    nodes = [
        TreeItem(id=a, kind="virtual_org", parent_id=c),
        TreeItem(id=b, kind="virtual_org", parent_id=a),
        TreeItem(id=c, kind="virtual_org", parent_id=b),
    ]
    tree = build_tree(ROOT, "", nodes, [TreeItem(id=_chan(1), kind="channel", parent_id=b)])
    assert [n.id for n in tree.children] == [a]  # the loop's smallest ID hangs under the root
    assert count_channels(tree) == 1


def test_deep_chain_is_flattened() -> None:
    nodes = [TreeItem(id=_node(i), kind="virtual_org", parent_id=_node(i - 1) if i else None) for i in range(200)]
    tree = build_tree(ROOT, "", nodes, [TreeItem(id=_chan(1), kind="channel", parent_id=_node(199))])
    walked = _walk(tree)
    assert max(d for _n, d in walked) <= MAX_DEPTH + 1
    assert len(walked) == 1 + 200 + 1
    tree.as_dict()  # no recursion trouble


ids = st.integers(min_value=0, max_value=30)


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[list[TreeItem], list[TreeItem]]:
    def ref() -> str | None:
        choice = draw(st.integers(0, 4))
        if choice == 0:
            return None
        if choice == 1:
            return ROOT
        if choice == 2:
            return _chan(draw(ids))  # a channel named as a parent
        if choice == 3:
            return "/".join(_node(draw(ids)) for _ in range(draw(st.integers(1, 3))))
        return _node(draw(ids))

    node_ids = draw(st.lists(ids, max_size=25))
    nodes = [TreeItem(id=_node(i), kind="virtual_org", parent_id=ref(), business_group_id=ref()) for i in node_ids]
    chan_ids = draw(st.lists(ids, max_size=25))
    channels = [TreeItem(id=_chan(i), kind="channel", parent_id=ref()) for i in chan_ids]
    return nodes, channels


@settings(max_examples=300, deadline=None)
@given(catalogs())
def test_every_item_once_and_no_cycles(data: tuple[list[TreeItem], list[TreeItem]]) -> None:
    nodes, channels = data
    tree = build_tree(ROOT, "", nodes, channels)
    walked = _walk(tree)  # a cycle would never end (or repeat nodes)
    seen = [n.id for n, _d in walked]
    assert len(seen) == len(set(seen))
    assert sorted(n.id for n, _d in walked if n.kind == "channel") == sorted({c.id for c in channels})
    assert {n.id for n, _d in walked if n.kind not in ("channel", "platform")} == {n.id for n in nodes}
    assert all(not n.children for n, _d in walked if n.kind == "channel")
    assert max(d for _n, d in walked) <= MAX_DEPTH + 1
