"""The catalog tree of a lower platform (our notes §4.4): org nodes with their channels. Pure.

A platform's catalog mixes playable channels with organisation nodes: administrative regions
(IDs of 2/4/6/8 digits), business groups (215), virtual organisations (216) and devices/platforms
(111–130, 200–299). Each item names its container by `ParentID` (sometimes a "/"-separated path),
`BusinessGroupID` or, for regions, `CivilCode`. The tree is built from stored rows, never trusted:
a parent that is unknown (or a channel) hangs the item under the platform root, a `ParentID` loop
a hostile platform sends is cut, and nesting deeper than `MAX_DEPTH` is flattened so the answer
stays bounded. Every channel and every node appears exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Deepest nesting kept; deeper nodes hang under the root (a hostile chain must not blow up JSON).
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeItem:
    """One stored catalog row, as far as the tree needs it."""

    id: str
    kind: str  # "channel", or an IdKind value for org nodes
    name: str = ""
    parent_id: str | None = None
    business_group_id: str | None = None
    civil_code: str | None = None
    status: str | None = None
    exposed: bool = True


@dataclass(slots=True, kw_only=True)
class TreeNode:
    """A node of the answer: the root (the platform), an org node or a channel (a leaf)."""

    id: str
    kind: str
    name: str = ""
    status: str | None = None
    exposed: bool = True
    children: list[TreeNode] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "name": self.name}
        if self.kind == "channel":
            out["status"] = self.status
            out["exposed"] = self.exposed
        else:
            out["children"] = [c.as_dict() for c in self.children]  # depth ≤ MAX_DEPTH + 2
        return out


def _candidates(item: TreeItem) -> list[str]:
    """Possible containers, most specific first: the ParentID path from its end, then the group,
    then the civil code (a region)."""
    out = [p.strip() for p in reversed((item.parent_id or "").split("/")) if p.strip()]
    for extra in (item.business_group_id, item.civil_code):
        if extra and extra.strip():
            out.append(extra.strip())
    return out


def _parent(item: TreeItem, nodes: dict[str, TreeItem], root_id: str) -> str:
    for cand in _candidates(item):
        if cand == item.id:
            continue
        if cand == root_id:
            return root_id
        if cand in nodes:
            return cand
    return root_id


def build_tree(root_id: str, root_name: str, nodes: Iterable[TreeItem], channels: Iterable[TreeItem]) -> TreeNode:
    """The platform's tree: `root_id` on top, org nodes nested, channels as leaves (sorted by ID)."""
    chans: dict[str, TreeItem] = {}
    for c in channels:
        chans.setdefault(c.id, c)
    orgs: dict[str, TreeItem] = {}
    for n in nodes:
        # the platform listing itself is the root; an ID that is also a channel stays a channel
        if n.id != root_id and n.id not in chans:
            orgs.setdefault(n.id, n)
    parent = {nid: _parent(n, orgs, root_id) for nid, n in orgs.items()}
    _cut_cycles(parent, root_id)
    children: dict[str, list[str]] = {}
    for nid in sorted(parent):
        children.setdefault(parent[nid], []).append(nid)
    _flatten_deep(parent, children, root_id)

    built: dict[str, TreeNode] = {root_id: TreeNode(id=root_id, kind="platform", name=root_name)}
    for nid, n in orgs.items():
        built[nid] = TreeNode(id=nid, kind=n.kind, name=n.name)
    for nid in sorted(parent):
        built[parent[nid]].children.append(built[nid])
    for cid in sorted(chans):
        c = chans[cid]
        built[_parent(c, orgs, root_id)].children.append(
            TreeNode(id=cid, kind="channel", name=c.name, status=c.status, exposed=c.exposed)
        )
    return built[root_id]


def _cut_cycles(parent: dict[str, str], root_id: str) -> None:
    """Re-hang under the root the smallest ID of every ParentID loop, so every node reaches it."""
    settled: set[str] = {root_id}
    for start in sorted(parent):
        path: list[str] = []
        on_path: set[str] = set()
        cur = start
        while cur not in settled:
            if cur in on_path:
                loop = path[path.index(cur):]
                parent[min(loop)] = root_id
                path, on_path, cur = [], set(), start  # walk again from the start
                continue
            path.append(cur)
            on_path.add(cur)
            cur = parent[cur]
        settled.update(path)


def _flatten_deep(parent: dict[str, str], children: dict[str, list[str]], root_id: str) -> None:
    """Nodes nested deeper than MAX_DEPTH hang under the root instead (breadth-first from it)."""
    queue: list[tuple[str, int]] = [(root_id, 0)]
    i = 0
    while i < len(queue):
        nid, depth = queue[i]
        i += 1
        for child in children.get(nid, []):
            if depth + 1 > MAX_DEPTH:
                parent[child] = root_id
                queue.append((child, 1))
            else:
                queue.append((child, depth + 1))


def count_channels(node: TreeNode) -> int:
    """Channels under `node` (iteratively; a test helper and the console's summary)."""
    total, stack = 0, [node]
    while stack:
        n = stack.pop()
        if n.kind == "channel":
            total += 1
        stack.extend(n.children)
    return total
