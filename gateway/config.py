"""Settings: a TOML file overridden by ``GBGATE_<SECTION>__<KEY>`` environment variables.

Every section is a frozen dataclass; values are coerced to the field's type and checked, so an
invalid value fails at start with the key's dotted name and what was expected (contract.md).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

SECRET_KEYS = frozenset({"default_password", "password", "token_secret", "nonce_secret", "webhook_url"})
ENV_PREFIX = "GBGATE_"


@dataclass(frozen=True, slots=True, kw_only=True)
class SipSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    id: str = "34020000002000000001"
    domain: str = "3402000000"
    default_password: str | None = None
    keepalive_interval: float = 60.0
    keepalive_timeout_count: int = 3
    register_expires_max: int = 3600
    register_expires_min: int = 60
    nonce_ttl: float = 300.0
    digest_algorithm: str = "MD5"
    rcvbuf: int = 8 * 1024 * 1024
    max_message: int = 65536
    # UDP signalling processes sharing the port (gateway/app/sip_workers.py): an integer, or "auto"
    # for one per CPU; 1 = everything in the one gbgate process
    workers: str = "1"
    catalog_idle_timeout: float = 5.0
    catalog_first_timeout: float = 120.0
    query_timeout: float = 5.0
    sync_concurrency: int = 16  # devices queried (DeviceInfo, Catalog) at once after registering
    query_on_register: bool = True  # DeviceInfo + Catalog after each new login (off only for registrar benchmarks)
    user_agent: str = "gbgate/0.1"
    # SIP over TLS with client certificates (GB 35114-style binding): off unless tls_port is set
    tls_port: int | None = None
    tls_cert: str = "./gbgate-data/certs/gateway.crt"  # as written by `gbgate certs server`
    tls_key: str = "./gbgate-data/certs/gateway.key"
    tls_ca: str = "./gbgate-data/certs/ca.crt"
    tls_require_client_cert: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSettings:
    host: str = "127.0.0.1"
    port_min: int = 30000
    port_max: int = 30999
    transport: str = "udp"
    timeout: float = 10.0
    loss_timeout: float = 2.0  # no RTP this long on a stream that was playing to viewers → re-INVITE
    linger: float = 10.0
    invite_timeout: float = 10.0
    rcvbuf: int = 4 * 1024 * 1024
    # an RTP socket woken once is read again at most this many seconds later (all of a loop's
    # streams in one pass: fewer wake-ups for at most this much added latency; 0 = at every wake-up)
    rx_window: float = 0.002
    viewer_queue: int = 256
    viewer_backlog: int = 4 * 1024 * 1024  # bytes an HTTP/WS-FLV viewer may lag before skipping to a keyframe
    # media worker processes (issue 15): "auto" (one per core; 1 on a one-core machine) or N = RTP
    # ingest and HTTP/WS-FLV viewers in N workers, each owning a slice of the port range; "1" =
    # everything in the main process
    workers: str = "auto"
    # pull sources (adapters/rtsp.py): PyAV open/read timeout, capped reconnect back-off, file root
    pull_timeout: float = 5.0
    pull_backoff_max: float = 30.0
    file_source_root: str | None = None  # file:// sources must lie under it; unset → no file sources


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    url: str = "sqlite:///./gbgate-data/gbgate.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class WhitelistSettings:
    max_failures: int = 5
    failure_window: float = 60.0
    lock_for: float = 900.0
    source_distinct_ids: int = 3  # a source locks when failures name this many IDs in the window ...
    source_max_failures: int = 50  # ... or reach this count (a NATed site shares one address)
    flood_max_per_second: int = 200  # per source address; a NATed site of a few hundred cameras re-registers at once
    flood_ban_for: float = 60.0
    signing_key: str = "./gbgate-data/keys/policy_ed25519.pem"
    signing_pub: str = "./gbgate-data/keys/policy_ed25519.pub.pem"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSettings:
    timezone: str = "Asia/Shanghai"
    language: str = "zh-CN"
    notice_hour: int = 10
    webhook_url: str | None = None
    # A month/year report is frozen when first issued this long after its period ends (late
    # events, vendors' feedback and the station's confirmations arrive in the meantime).
    freeze_after: float = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSettings:
    journal_path: str = "./gbgate-data/journal/health.log"
    fsync_interval: float = 0.05  # group commit: an event is durable within this (≤ 1 s)
    probe_interval: float = 900.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeSettings:
    # "auto": uvloop when installed (architecture.md §6; about a fifth less CPU on the media
    # and SIP paths), else asyncio's own loop. "asyncio" forces the standard loop.
    event_loop: str = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadePlatform:
    """One upper platform gbgate registers with as a lower platform (gb28181.md §7.1)."""

    id: str
    domain: str
    host: str
    port: int = 5060
    transport: str = "udp"
    password: str | None = None
    channels: tuple[str, ...] = ()  # channel IDs shared with this upper (∪ sites ∪ vendors; all empty = all admitted)
    sites: tuple[str, ...] = ()  # share the channels of devices whose whitelist entry has one of these sites
    vendors: tuple[str, ...] = ()  # share the channels whose channel contract names one of these vendors
    username: str | None = None  # digest username; default our sip.id (WVP)
    expires: int = 3600  # REGISTER Expires asked for; refreshed before it runs out
    keepalive_interval: float = 60.0
    keepalive_failures: int = 3  # consecutive keepalive failures before the upper counts as lost
    retry_interval: float = 60.0  # re-register back-off while offline
    catalog_per_message: int = 1  # items per Response/Catalog MESSAGE (WVP sends 1)
    catalog_wait: float = 2.0  # wait this long for a page's 200, then fall back to catalog_spacing
    catalog_spacing: float = 0.1
    charset: str = "GB2312"
    ptz: bool = False  # forward this upper's PTZ commands (DeviceControl/PTZCmd) for shared channels


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    sip: SipSettings = field(default_factory=SipSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    whitelist: WhitelistSettings = field(default_factory=WhitelistSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    cascade: tuple[CascadePlatform, ...] = ()
    data_dir: str = "./gbgate-data"


_SECTIONS: dict[str, type] = {
    "sip": SipSettings,
    "http": HttpSettings,
    "media": MediaSettings,
    "database": DatabaseSettings,
    "whitelist": WhitelistSettings,
    "report": ReportSettings,
    "health": HealthSettings,
    "runtime": RuntimeSettings,
}



#: An upper bound for `sip.workers` / `media.workers`: a typo like 20000 must not fork a storm.
MAX_WORKERS = 256


def usable_cpus() -> int:
    """The CPUs this process may run on (a cpuset or `taskset` narrows them), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def even_ports(media: MediaSettings) -> int:
    """RTP ports in the media range (RTP takes even ports, RFC 3550 §11)."""
    first = media.port_min + (media.port_min & 1)
    return max(0, (media.port_max - first) // 2 + 1)


def media_worker_count(media: MediaSettings, cpus: int | None = None) -> int:
    """`media.workers` resolved: "auto" is one per core, but never more workers than port slices."""
    return min(worker_count(media.workers, cpus), max(1, even_ports(media)))


def worker_count(value: str | int, cpus: int | None = None) -> int:
    """`sip.workers` / `media.workers`: an integer 1..MAX_WORKERS, or "auto" (one per core)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(1, cpus if cpus is not None else usable_cpus())
    n = int(value)
    if not 1 <= n <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS} or auto, got {n}")
    return n

def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert one raw value (TOML or env string) to the field's type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        empty = value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))
        if empty and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number of seconds, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    raise ConfigError(key, f"unsupported setting type {annotation!r}")


def _build(cls: type, section: str, raw: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"{section}.{name}", f"unknown key; expected one of {', '.join(sorted(known))}")
        kwargs[name] = _coerce(f"{section}.{name}", value, hints[name])
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{section}.{missing[0]}", "is required")
    return cls(**kwargs)


def _validate(s: Settings) -> None:
    from gateway.gb.ids import is_valid_id

    if not is_valid_id(s.sip.id):
        raise ConfigError("sip.id", f"expected a 20-digit GB/T 28181 ID, got {s.sip.id!r}")
    if not (len(s.sip.domain) == 10 and s.sip.domain.isdigit()):
        raise ConfigError("sip.domain", f"expected a 10-digit domain, got {s.sip.domain!r}")
    for key, host in (("sip.host", s.sip.host), ("http.host", s.http.host), ("media.host", s.media.host)):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(key, f"expected an IP address to bind to, got {host!r}") from None
    for key, port in (("sip.port", s.sip.port), ("http.port", s.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"expected a port 0-65535, got {port}")
    if not (1024 <= s.media.port_min <= s.media.port_max <= 65535):
        raise ConfigError("media.port_min", "expected 1024 <= port_min <= port_max <= 65535")
    for key, value in (("media.workers", s.media.workers), ("sip.workers", s.sip.workers)):
        try:
            worker_count(value)
        except ValueError:
            raise ConfigError(key, f"expected an integer from 1 to {MAX_WORKERS} or \"auto\", got {value!r}") from None
    if worker_count(s.media.workers, cpus=1) > even_ports(s.media):
        raise ConfigError("media.workers", f"{s.media.workers} workers need at least as many even ports in "
                                           f"media.port_min..port_max ({even_ports(s.media)})")
    if not 0 <= s.media.rx_window <= 0.05:
        raise ConfigError("media.rx_window", "expected a number of seconds from 0 to 0.05")
    if s.media.transport not in ("udp", "tcp-passive", "tcp-active"):
        raise ConfigError("media.transport", f"expected udp, tcp-passive or tcp-active, got {s.media.transport!r}")
    if s.sip.digest_algorithm not in ("MD5", "SHA-256"):
        raise ConfigError("sip.digest_algorithm", "expected MD5 or SHA-256")
    for name in ("keepalive_interval", "nonce_ttl", "query_timeout"):
        if getattr(s.sip, name) <= 0:
            raise ConfigError(f"sip.{name}", "expected a positive number of seconds")
    if s.sip.keepalive_timeout_count < 1:
        raise ConfigError("sip.keepalive_timeout_count", "expected an integer >= 1")
    if not 0 < s.health.fsync_interval <= 1.0:
        raise ConfigError("health.fsync_interval", "expected a number of seconds in (0, 1]")
    if not 0 <= s.report.notice_hour <= 23:
        raise ConfigError("report.notice_hour", "expected an hour 0-23")
    if not 0 <= s.report.freeze_after <= 90 * 86_400:
        raise ConfigError("report.freeze_after", "expected seconds from 0 to 7776000 (90 days)")
    if s.report.language not in ("zh-CN", "en"):
        raise ConfigError("report.language", "expected zh-CN or en")
    for i, c in enumerate(s.cascade):
        key = f"cascade[{i}]"
        if not is_valid_id(c.id):
            raise ConfigError(f"{key}.id", f"expected a 20-digit GB/T 28181 ID, got {c.id!r}")
        if c.transport not in ("udp", "tcp"):
            raise ConfigError(f"{key}.transport", f"expected udp or tcp, got {c.transport!r}")
        if not 0 < c.port <= 65535:
            raise ConfigError(f"{key}.port", f"expected a port 1-65535, got {c.port}")
        if c.expires < 60 or c.keepalive_interval <= 0 or c.retry_interval <= 0 or c.keepalive_failures < 1:
            raise ConfigError(key, "expected expires >= 60, positive intervals and keepalive_failures >= 1")
        if c.catalog_per_message < 1 or c.catalog_wait <= 0 or c.catalog_spacing < 0:
            raise ConfigError(f"{key}.catalog_per_message", "expected >= 1 and positive catalog_wait/spacing")
        if c.charset.upper() not in ("GB2312", "GB18030", "UTF-8"):
            raise ConfigError(f"{key}.charset", f"expected GB2312, GB18030 or UTF-8, got {c.charset!r}")
    if len({c.id for c in s.cascade}) != len(s.cascade):
        raise ConfigError("cascade", "two [[cascade]] entries have the same id")
    if s.runtime.event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError("runtime.event_loop", f"expected auto, uvloop or asyncio, got {s.runtime.event_loop!r}")


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path or env.get("GBGATE_CONFIG")
    if path:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("--config", f"file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{p} is not valid TOML: {exc}") from None
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in raw.items() if isinstance(v, dict)}
    for key in raw:
        if key not in _SECTIONS and key not in ("cascade", "data_dir"):
            raise ConfigError(key, f"unknown section; expected one of {', '.join(sorted(_SECTIONS))}, cascade")
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section not in _SECTIONS:
            raise ConfigError(name, f"unknown section {section!r}")
        merged.setdefault(section, {})[key] = value
    sections = {name: _build(cls, name, merged.get(name, {})) for name, cls in _SECTIONS.items()}
    cascade_raw = raw.get("cascade", [])
    if not isinstance(cascade_raw, list):
        raise ConfigError("cascade", "expected a list of [[cascade]] tables")
    cascade = tuple(_build(CascadePlatform, f"cascade[{i}]", c) for i, c in enumerate(cascade_raw))
    data_dir = str(raw.get("data_dir", env.get("GBGATE_DATA_DIR", "./gbgate-data")))
    settings = Settings(cascade=cascade, data_dir=data_dir, **sections)
    _validate(settings)
    return settings


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as a dict, secrets replaced by '***'."""

    def walk(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if f.name in SECRET_KEYS and value is not None:
                    out[f.name] = "***"
                else:
                    out[f.name] = walk(value)
            return out
        if isinstance(obj, tuple):
            return [walk(v) for v in obj]
        return obj

    result: dict[str, Any] = walk(settings)
    return result


def to_toml(data: Mapping[str, Any]) -> str:
    """Minimal TOML writer for `config show` (values are str/int/float/bool/None/lists)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        text = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'

    for key, value in data.items():
        if not isinstance(value, dict | list) and value is not None:
            lines.append(f"{key} = {scalar(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            for k, v in value.items():
                lines.append(f"# {k} = (not set)" if v is None else f"{k} = {scalar(v)}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"\n[[{key}]]")
                for k, v in item.items():
                    if v is not None:
                        lines.append(f"{k} = {scalar(v)}")
    return "\n".join(lines).lstrip() + "\n"
