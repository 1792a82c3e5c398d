"""The keepalive fast path agrees with the full parser, and refuses everything it is not sure of."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.gb import manscdp
from gateway.gb.keepalive_fast import is_plain_keepalive, quick_keepalive

DATA = Path(__file__).parents[2] / "data" / "manscdp"
DEV = "34020000001320000101"


def full(body: bytes) -> manscdp.Keepalive:
    return manscdp.keepalive(manscdp.parse(body))


@given(sn=st.integers(0, 10**9), status=st.sampled_from(["OK", "ERROR", "ok"]),
       charset=st.sampled_from(["GB2312", "UTF-8"]))
def test_same_answer_as_the_full_parser(sn: int, status: str, charset: str) -> None:
    body = manscdp.build_keepalive(DEV, sn, status, charset=charset)
    fast = quick_keepalive(body)
    assert fast is not None
    assert fast == full(body)


def test_vectors_agree_or_fall_back() -> None:
    seen = 0
    for path in sorted(DATA.glob("*")):
        body = path.read_bytes()
        fast = quick_keepalive(body)
        if fast is None:
            continue
        seen += 1
        assert fast == full(body), path.name
    assert seen >= 1


def test_crafted_bodies_fall_back() -> None:
    base = manscdp.build_keepalive(DEV, 7)
    assert quick_keepalive(base) is not None
    hostile = [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><Notify><CmdType>Keepalive</CmdType>'
        b"<SN>1</SN><DeviceID>&a;</DeviceID></Notify>",
        base.replace(b"<Status>OK</Status>", b"<Info><DeviceID>1</DeviceID></Info>"),  # nested: full parser
        base.replace(b"Keepalive", b"Catalog"),
        base.replace(b"<SN>7</SN>", b"<SN>x7</SN>"),
        base.replace(b"<Notify>", b"<Query>").replace(b"</Notify>", b"</Query>"),
        base.replace(b"</Notify>", b"<SN>8</SN></Notify>"),  # repeated element
        base + b"<trailing/>",
        base.replace(b"<Status>OK</Status>", "<Status>正常</Status>".encode("gb18030")),  # not ASCII
        b"<Notify>" + b"<A>x</A>" * 200 + b"</Notify>",
    ]
    for body in hostile:
        assert quick_keepalive(body) is None, body[:80]


@given(st.binary(max_size=300))
def test_garbage_never_raises(body: bytes) -> None:
    quick_keepalive(body)


def test_plain_keepalive_needs_the_manscdp_type_and_the_sender_in_the_body() -> None:
    body = manscdp.build_keepalive(DEV, 7, "OK")
    assert is_plain_keepalive("Application/MANSCDP+xml", body, DEV)
    assert not is_plain_keepalive(None, body, DEV)
    assert not is_plain_keepalive("application/xml", body, DEV)
    assert not is_plain_keepalive("Application/MANSCDP+xml", body, "34020000001320000102")  # another's body
    assert not is_plain_keepalive("Application/MANSCDP+xml", body.replace(b"Keepalive", b"Catalog"), DEV)


ws = st.sampled_from(["", "\r\n", "\n", " ", "\t", "\r\n\r\n  "])


@st.composite
def plain_bodies(draw: st.DrawFn) -> bytes:
    """The usual layout, with the variations devices put in it."""
    decl = draw(st.sampled_from(['', '<?xml version="1.0"?>', '<?xml version="1.0" encoding="GB2312"?>',
                                 "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>"]))
    status = draw(st.one_of(st.none(), st.sampled_from(["OK", "ok", "ERROR", "Online"])))
    parts = [draw(ws), decl, draw(ws), "<Notify>", draw(ws), "<CmdType>Keepalive</CmdType>", draw(ws),
             f"<SN>{draw(st.integers(0, 10**18 - 1))}</SN>", draw(ws),
             f"<DeviceID>{draw(st.from_regex(r'[0-9A-Za-z]{1,32}', fullmatch=True))}</DeviceID>", draw(ws)]
    if status is not None:
        parts += [f"<Status>{status}</Status>", draw(ws)]
    parts += ["</Notify>", draw(ws)]
    return "".join(parts).encode() + b"\x00" * draw(st.integers(0, 3))


@given(plain_bodies())
def test_the_usual_layout_is_read_in_one_pass_as_the_general_shape_reads_it(body: bytes) -> None:
    from gateway.gb import keepalive_fast

    assert keepalive_fast._PLAIN.match(body) is not None
    fast = quick_keepalive(body)
    assert fast is not None and fast == keepalive_fast._general(body)
    assert is_plain_keepalive("Application/MANSCDP+xml", body, fast.device_id)
    assert not is_plain_keepalive("Application/MANSCDP+xml", body, fast.device_id + "0")
    if not body.endswith(b"\x00"):
        assert fast == full(body)


@given(plain_bodies(), st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=3)), min_size=1,
                                max_size=4))
def test_what_the_one_pass_accepts_the_general_shape_accepts_alike(body: bytes, edits: list[tuple[int, bytes]]) -> None:
    """Random edits of a usual body: whatever the one-pass reading still accepts, the general shape
    reads the same way (so the one pass never lets through what the general shape would refuse)."""
    from gateway.gb import keepalive_fast

    for at, new in edits:
        at %= len(body) + 1
        body = body[:at] + new + body[at + 1:]
    m = keepalive_fast._PLAIN.match(body) if len(body) <= 1024 else None
    general = keepalive_fast._general(body)
    if m is not None:
        assert general is not None and quick_keepalive(body) == general
    for sender in ("34020000001320000101", general.device_id if general else "x"):
        assert is_plain_keepalive("Application/MANSCDP+xml", body, sender) == (
            general is not None and general.device_id == sender)
