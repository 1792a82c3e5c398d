"""Digest (gb28181 §3.3 vectors), nonce issuing/expiry, credential parsing, client side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip import digest
from gateway.sip.digest import (
    Algorithm,
    NonceIssuer,
    NonceState,
    ReplayGuard,
    authorization,
    challenge,
    ha1,
    parse_credentials,
    verify,
)
from gateway.sip.errors import SipParseError

V = json.loads((Path(__file__).parents[2] / "data" / "sip" / "digest_vectors.json").read_text())


def creds_text(response: str, extra: str = "", alg: str = "MD5") -> str:
    return (f'Digest username="{V["username"]}", realm="{V["realm"]}", nonce="{V["nonce"]}", '
            f'uri="{V["uri"]}", response="{response}", algorithm={alg}{extra}')


def test_ha1_and_ha2() -> None:
    assert ha1("MD5", V["username"], V["realm"], V["password"]) == V["ha1_md5"]
    assert digest._h("MD5", f'{V["method"]}:{V["uri"]}') == V["ha2_md5"]


def test_no_qop_vector_verifies() -> None:
    c = parse_credentials(creds_text(V["response_md5_no_qop"]))
    assert c.username == V["username"] and c.qop is None and c.algorithm == "MD5"
    assert verify(c, "REGISTER", V["ha1_md5"])
    assert not verify(c, "REGISTER", ha1("MD5", V["username"], V["realm"], "wrong"))
    assert not verify(c, "INVITE", V["ha1_md5"])  # method is part of HA2


def test_qop_auth_vector_verifies_and_tolerates_case() -> None:
    extra = f', qop=auth, nc={V["nc"]}, cnonce="{V["cnonce"]}"'
    c = parse_credentials(creds_text(V["response_md5_qop_auth"].upper(), extra))
    assert (c.qop, c.nc, c.cnonce) == ("auth", V["nc"], V["cnonce"])
    assert verify(c, "REGISTER", V["ha1_md5"])
    assert digest.response_value("MD5", V["ha1_md5"], V["nonce"], "REGISTER", V["uri"], "auth", V["nc"],
                                 V["cnonce"]) == V["response_md5_qop_auth"]


def test_sha256_vector() -> None:
    h = ha1(Algorithm.SHA256, V["username"], V["realm"], V["password"])
    extra = f', qop=auth, nc={V["nc"]}, cnonce="{V["cnonce"]}"'
    c = parse_credentials(creds_text(V["response_sha256_qop_auth"], extra, alg="SHA-256"))
    assert verify(c, "REGISTER", h)
    assert not verify(c, "REGISTER", V["ha1_md5"])


def test_verify_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = digest.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(digest.hmac, "compare_digest", spy)
    assert verify(parse_credentials(creds_text(V["response_md5_no_qop"])), "REGISTER", V["ha1_md5"])
    assert calls == [(V["response_md5_no_qop"].encode(), V["response_md5_no_qop"].encode())]


def test_unsupported_things_fail_closed() -> None:
    base = creds_text(V["response_md5_no_qop"])
    assert not verify(parse_credentials(base.replace("algorithm=MD5", "algorithm=MD5-sess-x")), "REGISTER",
                      V["ha1_md5"])
    assert not verify(parse_credentials(base + ', qop=auth-int, nc=00000001, cnonce="x"'), "REGISTER",
                      V["ha1_md5"])
    assert not verify(parse_credentials(base + ", qop=auth"), "REGISTER", V["ha1_md5"])  # no nc/cnonce


@pytest.mark.parametrize("text", [
    "", "Digest", "Digest username=", 'Digest username="a" realm="b"', "Digest ,,,", 'Digest username="abc',
    'Digest realm="r", nonce="n", uri="u", response="x"',  # no username
])
def test_garbage_raises_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_credentials(text)


def test_tolerant_spacing_and_unknown_scheme() -> None:
    c = parse_credentials('  Digest   username = "u" ,realm="r",nonce="n" ,  uri="sip:x" , response="AB" , '
                          'algorithm = md5 , opaque="o", foo=bar')
    assert (c.username, c.realm, c.uri, c.response, c.algorithm, c.opaque) == ("u", "r", "sip:x", "AB", "md5", "o")
    assert c.params["foo"] == "bar"
    other = parse_credentials("NoOneKnowsThisScheme opaque-data=here")  # RFC 4475 §3.3.7
    assert other.scheme == "NoOneKnowsThisScheme" and not verify(other, "REGISTER", V["ha1_md5"])


def test_nonce_issuer_valid_stale_invalid() -> None:
    issuer = NonceIssuer(b"secret", ttl=300)
    n = issuer.issue(1000.0)
    assert n != issuer.issue(1000.0)  # random part
    assert issuer.check(n, 1000.0) is NonceState.VALID
    assert issuer.check(n, 1299.0) is NonceState.VALID
    assert issuer.check(n, 1301.0) is NonceState.STALE
    assert NonceIssuer(b"other").check(n, 1000.0) is NonceState.INVALID
    tampered = ("0" if n[0] != "0" else "1") + n[1:]
    assert issuer.check(tampered, 1000.0) is NonceState.INVALID
    assert issuer.check("", 1000.0) is NonceState.INVALID
    assert issuer.check("zz" * 24, 1000.0) is NonceState.INVALID
    assert issuer.check(n, 900.0) is NonceState.INVALID  # issued in the future


@pytest.mark.parametrize("qop", [True, False])
@pytest.mark.parametrize("alg", [Algorithm.MD5, Algorithm.SHA256])
def test_client_authorization_round_trip(qop: bool, alg: Algorithm) -> None:
    ch = challenge("4401060000", "abc123", alg, qop=qop, opaque="op")
    assert ch.startswith('Digest realm="4401060000", nonce="abc123"')
    auth = authorization(ch, method="REGISTER", uri=V["uri"], username=V["username"], password=V["password"])
    c = parse_credentials(auth)
    assert c.opaque == "op" and (c.qop == "auth") == qop and c.algorithm == alg.value
    assert verify(c, "REGISTER", ha1(alg, V["username"], "4401060000", V["password"]))
    assert not verify(c, "REGISTER", ha1(alg, V["username"], "4401060000", "nope"))


def test_client_reproduces_gb_vector() -> None:
    ch = f'Digest realm="{V["realm"]}", nonce="{V["nonce"]}", qop="auth"'
    auth = authorization(ch, method="REGISTER", uri=V["uri"], username=V["username"], password=V["password"],
                         cnonce=V["cnonce"])
    assert f'response="{V["response_md5_qop_auth"]}"' in auth and "nc=00000001" in auth
    ch2 = f'Digest realm="{V["realm"]}", nonce="{V["nonce"]}", algorithm=MD5'
    auth2 = authorization(ch2, method="REGISTER", uri=V["uri"], username=V["username"], password=V["password"])
    assert f'response="{V["response_md5_no_qop"]}"' in auth2 and "qop" not in auth2


def test_challenge_stale_flag() -> None:
    assert challenge("r", "n", stale=True, qop=False) == 'Digest realm="r", nonce="n", algorithm=MD5, stale=TRUE'


def test_nonce_is_bound_to_the_source_it_was_issued_to() -> None:
    issuer = NonceIssuer(b"secret", ttl=300)
    n = issuer.issue(1000.0, "udp:192.0.2.7:5060")
    assert issuer.check(n, 1001.0, "udp:192.0.2.7:5060") is NonceState.VALID
    assert issuer.check(n, 1001.0, "udp:192.0.2.7:5061") is NonceState.INVALID  # another port
    assert issuer.check(n, 1001.0, "tcp:192.0.2.7:5060") is NonceState.INVALID
    assert issuer.check(n, 1001.0) is NonceState.INVALID
    assert NonceIssuer.issued_at(n) == 1000.0


def test_replay_guard_accepts_each_nonce_nc_pair_once() -> None:
    guard = ReplayGuard(ttl=300)
    assert guard.accept("n1", "00000001", 1000.0, 1000.0) is NonceState.VALID
    assert guard.accept("n1", "00000001", 1000.0, 1001.0) is NonceState.INVALID  # replay
    assert guard.accept("n1", "00000002", 1000.0, 1002.0) is NonceState.VALID    # next nc: fine
    assert guard.accept("n1", "00000002", 1000.0, 1003.0) is NonceState.INVALID
    assert guard.accept("n1", "00000001", 1000.0, 1003.0) is NonceState.INVALID  # going back
    assert guard.accept("n2", None, 1000.0, 1004.0) is NonceState.VALID          # no qop: once
    assert guard.accept("n2", None, 1000.0, 1005.0) is NonceState.INVALID
    assert guard.accept("n3", "zz", 1000.0, 1005.0) is NonceState.INVALID        # not hex


def test_replay_guard_forgets_only_what_is_stale_anyway() -> None:
    """By hand: ttl 300, margin 6 → n1 (first use 1000) is kept through 1306 and dropped after;
    by then a nonce issued at ≤ 1000 is stale (1306 - 1000 > 300), so forgetting reopens nothing."""
    guard = ReplayGuard(ttl=300)
    guard.accept("n1", "1", 1000.0, 1000.0)
    guard.accept("n2", "1", 1200.0, 1200.0)
    assert guard.accept("n1", "1", 1000.0, 1305.0) is NonceState.INVALID
    assert len(guard) == 2
    guard.accept("n3", "1", 1307.0, 1307.0)
    assert len(guard) == 2  # n1 dropped, n2 and n3 kept


def test_replay_guard_eviction_refuses_older_nonces_as_stale() -> None:
    guard = ReplayGuard(ttl=300, max_entries=2)
    for i, t in enumerate((10.0, 20.0, 30.0)):
        assert guard.accept(f"n{i}", "1", t, t) is NonceState.VALID
    assert len(guard) == 2
    # n0 (issued at 10) was evicted: replaying it must not pass; nonces issued ≤ 10 are now stale
    assert guard.accept("n0", "1", 10.0, 31.0) is NonceState.STALE
    assert guard.accept("n9", "1", 5.0, 31.0) is NonceState.STALE
    assert guard.accept("n1", "1", 20.0, 31.0) is NonceState.INVALID
    assert guard.accept("n4", "1", 31.0, 31.0) is NonceState.VALID


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4)), max_size=60))
def test_replay_guard_never_accepts_a_pair_twice(uses: list[tuple[int, int]]) -> None:
    guard = ReplayGuard(ttl=1e9, max_entries=3)
    accepted: set[tuple[int, int]] = set()
    for step, (nonce, nc) in enumerate(uses):
        if guard.accept(f"n{nonce}", f"{nc:08x}", float(nonce), 100.0 + step) is NonceState.VALID:
            assert (nonce, nc) not in accepted
            accepted.add((nonce, nc))


def test_replay_guard_memory_at_20000_devices() -> None:
    """Measured 4.6 MB (230 B per device, the nonce strings included) when all 20,000 devices
    register within one nonce TTL; the bound leaves room for interpreter differences."""
    from load_tests.bench_replay import measure

    total, per_device = measure(20_000)
    assert total < 6_000_000 and per_device < 300


def _params_one_by_one(value: str) -> tuple[str, dict[str, str]]:
    """parse_auth_params as it was: one anchored match per param (the reference for the
    one-pass version, which must accept and refuse exactly the same values)."""
    m = digest._SCHEME.match(value)
    if m is None:
        raise SipParseError("Bad Authorization")
    pos, params = m.end(), {}
    while pos < len(value):
        p = digest._PARAM.match(value, pos)
        if p is None or p.end() == pos:
            raise SipParseError("Bad Authorization")
        name, quoted, token, _ = p.groups()
        params[name.lower()] = token if quoted is None else digest._UNESCAPE.sub(r"\1", quoted)
        pos = p.end()
    return m.group(1), params


def _outcome(parse: Callable[[str], object], value: str) -> object:
    """What a parser makes of `value`: its result, or SipParseError if it refuses it."""
    try:
        return parse(value)
    except SipParseError:
        return SipParseError


_AUTH_PIECES = st.sampled_from(['Digest', ' ', 'username', 'realm', 'nc', '=', '"', '\\', ',', ', ', '\t', 'a',
                                '"x y"', '"a\\"b"', '00000001', 'MD5', 'qop=auth', '\r\n', ';', '=""', '""', '9'])


@given(st.lists(_AUTH_PIECES, max_size=24).map("".join))
def test_params_parse_exactly_as_one_match_at_a_time(value: str) -> None:
    assert _outcome(digest.parse_auth_params, value) == _outcome(_params_one_by_one, value)


def test_params_parse_the_common_shapes() -> None:
    for value in ('Digest username="34020000001320000001", realm="3402000000", nonce="n", uri="sip:a@b", '
                  'response="r", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"',
                  'Digest realm="3402000000",nonce="n",algorithm=MD5,qop="auth"', 'Digest a="x\\"y", b=, c=""',
                  'Basic', 'Digest a=b,', 'Digest a=b, ', 'Digest a=b c=d', 'Digest =b', 'Digest a="unterminated'):
        assert _outcome(digest.parse_auth_params, value) == _outcome(_params_one_by_one, value), value
