"""Prometheus exposition of the counters components keep as plain dicts.

Hot paths increment `collections.Counter` entries (no locks, no label objects); this collector
turns them into metric families when /metrics is scraped. A counter key is
"<family>:<label value>[:<more>]" and a source maps families to metric names and label names.

/metrics needs no authentication, and many label values come from the wire (a SIP method token,
a MANSCDP CmdType): label sets are bounded twice. Hot paths count a value outside its known set as
`other` (`bounded()`, so the stats dict does not grow either), and the collector folds any value
outside a family's `allowed` set — and any label set beyond `max_label_sets` per metric — into
`other`, so no source can make a scrape grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.sip.message import KNOWN_METHODS

OTHER = "other"

SIP_METHODS = KNOWN_METHODS
#: MANSCDP roots and CmdTypes of GB/T 28181-2016 §A.2 and 2022 additions.
MANSCDP_ROOTS = frozenset({"Query", "Control", "Notify", "Response"})
MANSCDP_CMD_TYPES = frozenset({
    "Keepalive", "Catalog", "DeviceInfo", "DeviceStatus", "RecordInfo", "Alarm", "ConfigDownload",
    "PresetQuery", "MobilePosition", "MediaStatus", "Broadcast", "DeviceControl", "DeviceConfig",
    "HomePositionQuery", "CruiseTrackListQuery", "CruiseTrackQuery", "PTZPositionQuery",
    "SDCardStatusQuery", "UploadSnapShotFinished", "VideoUploadNotify", "DeviceUpgradeResult",
})
#: SIP status codes as labels: only the three-digit range is a status at all.
SIP_STATUSES = frozenset(str(n) for n in range(100, 700))


def bounded(value: str, allowed: frozenset[str]) -> str:
    """`value` when it is one of `allowed`, else `other`: for counter keys built from wire input."""
    return value if value in allowed else OTHER


Allowed = Sequence[frozenset[str] | None]      # per label: the values kept (None = any, capped)


@dataclass(slots=True)
class CounterSource:
    """One component's counters: stats dict plus how its key families are named."""

    stats: Callable[[], Mapping[str, int]]
    families: dict[str, tuple[str, str, tuple[str, ...]]]  # prefix -> (metric, help, labels)
    allowed: Mapping[str, Allowed] = field(default_factory=dict)   # prefix -> known values per label


@dataclass(slots=True)
class GaugeSource:
    name: str
    help: str
    value: Callable[[], float]


@dataclass(slots=True, eq=False)
class Metrics(Collector):
    counters: list[CounterSource] = field(default_factory=list)
    gauges: list[GaugeSource] = field(default_factory=list)
    max_label_sets: int = 64          # per metric; further label sets are counted under `other`
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=False))

    def __post_init__(self) -> None:
        self.registry.register(self)

    def add_counters(self, source: CounterSource) -> None:
        self.counters.append(source)

    def add_gauge(self, name: str, help_text: str, value: Callable[[], float]) -> None:
        self.gauges.append(GaugeSource(name, help_text, value))

    def collect(self) -> Iterable[Metric]:
        families: dict[str, tuple[CounterMetricFamily, dict[tuple[str, ...], float]]] = {}
        for source in self.counters:
            for key, value in list(source.stats().items()):
                prefix, _, rest = key.partition(":")
                spec = source.families.get(prefix)
                if spec is None:
                    continue
                metric, help_text, labels = spec
                entry = families.get(metric)
                if entry is None:
                    entry = families[metric] = (CounterMetricFamily(metric, help_text, labels=list(labels)), {})
                parts = rest.split(":", len(labels) - 1) if labels else []
                parts += [""] * (len(labels) - len(parts))
                known = source.allowed.get(prefix, ())
                for i, allowed in enumerate(known[: len(parts)]):
                    if allowed is not None and parts[i] not in allowed:
                        parts[i] = OTHER
                sets = entry[1]
                label_set = tuple(parts)
                if label_set not in sets and len(sets) >= self.max_label_sets:
                    label_set = (OTHER,) * len(labels)
                sets[label_set] = sets.get(label_set, 0) + value
        for fam, sets in families.values():
            for label_set, total in sets.items():
                fam.add_metric(list(label_set), total)
            yield fam
        for g in self.gauges:
            gauge = GaugeMetricFamily(g.name, g.help)
            gauge.add_metric([], g.value())
            yield gauge

    def render(self) -> bytes:
        return generate_latest(self.registry)
