"""/metrics has bounded label sets (issue 10 item 10).

/metrics needs no token, and method tokens and CmdTypes come from the wire: today each new one is
a new label (and a new key in the adapter's stats) for as long as the process lives.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.health.metrics import OTHER, CounterSource, Metrics
from tests.adapters.test_gb_device import DEV, PW, UdpPhone
from tests.interop.conftest import gateway_settings, whitelist

N = 120


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path))
    await g.start()
    yield g
    await g.stop()


def _labels(text: str, metric: str, label: str) -> set[str]:
    return set(re.findall(rf'^{metric}\{{[^}}]*{label}="([^"]*)"', text, re.M))


async def test_attacker_methods_and_cmdtypes_fold_into_other(gw: Gateway) -> None:
    phone = UdpPhone(gw)
    try:
        for i in range(N):                                # unauthenticated: any token is a legal method
            await phone.send(phone.build(f"X{i:04d}AB", call_id=f"x{i}"))
        await whitelist(gw, DEV, PW)
        assert (await phone.register()).status == 200
        for i in range(N):
            body = (f'<?xml version="1.0"?><Notify><CmdType>Evil{i}</CmdType><SN>{i + 10}</SN>'
                    f"<DeviceID>{DEV}</DeviceID></Notify>").encode()
            await phone.message(body)
        async with aiohttp.ClientSession() as http, http.get(f"{gw.http_url}/metrics") as m:
            text = await m.text()
    finally:
        phone.close()
    for metric in ("gbgate_sip_requests_total", "gbgate_sip_transport_requests_total"):
        methods = _labels(text, metric, "method")
        assert not any(m.startswith("X0") for m in methods), methods
        assert OTHER in methods and len(methods) <= 15
    cmds = _labels(text, "gbgate_manscdp_messages_total", "cmd")
    assert not any(c.startswith("Evil") for c in cmds) and OTHER in cmds
    assert f'gbgate_manscdp_messages_total{{cmd="other",root="Notify"}} {float(N)}' in text
    stats = gw.adapter.stats  # type: ignore[union-attr]
    assert not [k for k in stats if "Evil" in k or ":X0" in k]      # the process does not grow either


def test_collector_caps_label_sets_per_metric() -> None:
    stats = Counter({f"refused:reason {i}": 1 for i in range(500)})
    m = Metrics(max_label_sets=10)
    m.add_counters(CounterSource(lambda: stats, {"refused": ("t_refused_total", "h", ("reason",))}))
    text = m.render().decode()
    lines = [x for x in text.splitlines() if x.startswith("t_refused_total{")]
    assert len(lines) == 11                                   # 10 kept + other
    assert 't_refused_total{reason="other"} 490.0' in lines


def test_collector_folds_values_outside_allowed() -> None:
    stats = Counter({"manscdp:Notify:Keepalive": 3, "manscdp:Notify:Evil": 2, "manscdp:Bogus:Catalog": 1})
    m = Metrics()
    m.add_counters(CounterSource(lambda: stats, {"manscdp": ("t_m_total", "h", ("root", "cmd"))},
                                 {"manscdp": (frozenset({"Notify"}), frozenset({"Keepalive", "Catalog"}))}))
    text = m.render().decode()
    assert 't_m_total{cmd="Keepalive",root="Notify"} 3.0' in text
    assert 't_m_total{cmd="other",root="Notify"} 2.0' in text
    assert 't_m_total{cmd="Catalog",root="other"} 1.0' in text
