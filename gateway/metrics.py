"""Prometheus exposition of the counters components keep as plain dicts.

Hot paths increment `collections.Counter` entries (no locks, no label objects); this collector
turns them into metric families when /metrics is scraped. A counter key is
"<family>:<label value>[:<more>]" and a source maps families to metric names and label names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(slots=True)
class CounterSource:
    """One component's counters: stats dict plus how its key families are named."""

    stats: Callable[[], Mapping[str, int]]
    families: dict[str, tuple[str, str, tuple[str, ...]]]  # prefix -> (metric, help, labels)


@dataclass(slots=True)
class GaugeSource:
    name: str
    help: str
    value: Callable[[], float]


@dataclass(slots=True, eq=False)
class Metrics(Collector):
    counters: list[CounterSource] = field(default_factory=list)
    gauges: list[GaugeSource] = field(default_factory=list)
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=False))

    def __post_init__(self) -> None:
        self.registry.register(self)

    def add_counters(self, source: CounterSource) -> None:
        self.counters.append(source)

    def add_gauge(self, name: str, help_text: str, value: Callable[[], float]) -> None:
        self.gauges.append(GaugeSource(name, help_text, value))

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for source in self.counters:
            for key, value in list(source.stats().items()):
                prefix, _, rest = key.partition(":")
                spec = source.families.get(prefix)
                if spec is None:
                    continue
                metric, help_text, labels = spec
                fam = families.get(metric)
                if fam is None:
                    fam = families[metric] = CounterMetricFamily(metric, help_text, labels=list(labels))
                parts = rest.split(":", len(labels) - 1) if labels else []
                parts += [""] * (len(labels) - len(parts))
                fam.add_metric(parts, value)
        yield from families.values()
        for g in self.gauges:
            fam = GaugeMetricFamily(g.name, g.help)
            fam.add_metric([], g.value())
            yield fam

    def render(self) -> bytes:
        return generate_latest(self.registry)
