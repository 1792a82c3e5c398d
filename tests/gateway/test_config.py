from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings, masked, to_toml
from gateway.errors import ConfigError


def test_defaults_match_contract() -> None:
    s = load_settings(env={})
    assert (s.sip.host, s.sip.port, s.sip.id, s.sip.domain) == ("127.0.0.1", 5060, "34020000002000000001", "3402000000")
    assert s.sip.default_password is None
    assert (s.sip.keepalive_interval, s.sip.keepalive_timeout_count, s.sip.register_expires_max) == (60.0, 3, 3600)
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert (s.media.port_min, s.media.port_max, s.media.transport) == (30000, 30999, "udp")
    assert (s.media.timeout, s.media.linger) == (10.0, 10.0)
    assert s.database.url == "sqlite:///./gbgate-data/gbgate.db"
    assert s.report.timezone == "Asia/Shanghai"


def test_toml_then_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text('[sip]\nport = 15060\ndefault_password = "s3cret"\n[http]\nport = 18080\n', encoding="utf-8")
    s = load_settings(cfg, env={"GBGATE_SIP__PORT": "25060", "GBGATE_MEDIA__TRANSPORT": "tcp-passive"})
    assert s.sip.port == 25060  # env wins over the file
    assert s.http.port == 18080
    assert s.media.transport == "tcp-passive"
    assert s.sip.default_password == "s3cret"


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text("[http]\nport = 9999\n", encoding="utf-8")
    assert load_settings(env={"GBGATE_CONFIG": str(cfg)}).http.port == 9999


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"GBGATE_SIP__PORT": "fifty"}, "sip.port"),
        ({"GBGATE_SIP__PORT": "70000"}, "sip.port"),
        ({"GBGATE_SIP__ID": "123"}, "sip.id"),
        ({"GBGATE_SIP__DOMAIN": "34020"}, "sip.domain"),
        ({"GBGATE_MEDIA__TRANSPORT": "quic"}, "media.transport"),
        ({"GBGATE_SIP__KEEPALIVE_INTERVAL": "-1"}, "sip.keepalive_interval"),
        ({"GBGATE_HTTP__HOST": "not-an-ip"}, "http.host"),
        ({"GBGATE_SIP__NOPE": "1"}, "sip.nope"),
        ({"GBGATE_NOSECTION__X": "1"}, "GBGATE_NOSECTION__X"),
        ({"GBGATE_RUNTIME__EVENT_LOOP": "trio"}, "runtime.event_loop"),
        ({"GBGATE_REPORT__FREEZE_AFTER": "-1"}, "report.freeze_after"),
        ({"GBGATE_REPORT__FREEZE_AFTER": "8000000"}, "report.freeze_after"),
        ({"GBGATE_SIP__WORKERS": "0"}, "sip.workers"),
        ({"GBGATE_SIP__WORKERS": "257"}, "sip.workers"),
        ({"GBGATE_MEDIA__WORKERS": "two"}, "media.workers"),
        ({"GBGATE_MEDIA__WORKERS": "-1"}, "media.workers"),
        ({"GBGATE_MEDIA__RX_WINDOW": "-0.001"}, "media.rx_window"),
        ({"GBGATE_MEDIA__RX_WINDOW": "0.5"}, "media.rx_window"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[sip\nport=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})


def test_show_masks_secrets() -> None:
    s = load_settings(env={"GBGATE_SIP__DEFAULT_PASSWORD": "hunter2", "GBGATE_REPORT__WEBHOOK_URL": "https://x/y"})
    shown = to_toml(masked(s))
    assert "hunter2" not in shown and "https://x/y" not in shown
    assert 'default_password = "***"' in shown
    assert "port = 5060" in shown


def test_cascade_platforms(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[cascade]]\nid = "44000000002000000001"\ndomain = "4400000000"\nhost = "127.0.0.1"\npassword = "p"\n'
        'channels = ["34020000001310000001"]\nsites = ["east-gate"]\nvendors = ["kehai", "hik"]\n',
        encoding="utf-8",
    )
    s = load_settings(cfg, env={})
    assert s.cascade[0].channels == ("34020000001310000001",)
    assert (s.cascade[0].sites, s.cascade[0].vendors) == (("east-gate",), ("kehai", "hik"))
    assert "***" in to_toml(masked(s))
    c = s.cascade[0]  # the keys added for the uplink (issue 14) keep WVP's defaults
    assert (c.expires, c.keepalive_interval, c.keepalive_failures, c.retry_interval) == (3600, 60.0, 3, 60.0)
    assert (c.catalog_per_message, c.catalog_spacing, c.charset, c.username, c.ptz) == (1, 0.1, "GB2312", None, False)


@pytest.mark.parametrize(("extra", "key"), [
    ('transport = "sctp"\n', "cascade[0].transport"),
    ('expires = 10\n', "cascade[0]"),
    ('catalog_per_message = 0\n', "cascade[0].catalog_per_message"),
])
def test_cascade_settings_are_checked(tmp_path: Path, extra: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[cascade]]\nid = "44000000002000000001"\ndomain = "4400000000"\nhost = "127.0.0.1"\n' + extra,
                   encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert err.value.key == key


def test_event_loop_choice() -> None:
    """auto/uvloop run on uvloop (a dependency on Linux); asyncio forces the standard loop."""
    import asyncio

    import uvloop

    from gateway.cli.common import event_loop_factory

    assert load_settings(env={}).runtime.event_loop == "auto"
    assert event_loop_factory("asyncio") is None
    for choice in ("auto", "uvloop"):
        factory = event_loop_factory(choice)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    with asyncio.Runner(loop_factory=event_loop_factory("auto")) as r:
        assert r.run(asyncio.sleep(0, "ran")) == "ran"
