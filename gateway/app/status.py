"""What /healthz reports per plane: each plane answers for itself, read at request time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

OK = "ok"
STOPPED = "stopped"


def alive(running: bool) -> str:
    """The status word for a component that is either running or not."""
    return OK if running else STOPPED


class ComponentStatus(Mapping[str, str]):
    """A read-only mapping `component → status word`, each value asked of its plane when read,
    so /healthz (`dict(svc.components)`) shows the state of now, not of start-up."""

    __slots__ = ("_probes",)

    def __init__(self, probes: Mapping[str, Callable[[], str]]) -> None:
        self._probes = dict(probes)

    def __getitem__(self, name: str) -> str:
        return self._probes[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._probes)

    def __len__(self) -> int:
        return len(self._probes)
