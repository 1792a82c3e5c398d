"""The INVITE trace: capped locally, every step heard by `on_step` (a media worker's stream)."""

from __future__ import annotations

from typing import Any

from gateway.media.session_stats import MAX_TRACE_STEPS, Trace


def test_on_step_hears_every_step_even_past_the_cap() -> None:
    heard: list[tuple[str, dict[str, Any]]] = []
    now = [100.0]
    t = Trace(attempt=2, clock=lambda: now[0], on_step=lambda step, detail: heard.append((step, detail)))
    t.add("invite_sent", port=30000)
    now[0] += 0.25
    t.once("first_packet", source="10.0.0.7:4000")
    t.once("first_packet", source="10.0.0.7:4000")  # once: neither kept nor heard again
    for i in range(MAX_TRACE_STEPS):
        t.add("ptz", n=i)
    assert len(t.steps) == MAX_TRACE_STEPS
    assert t.steps[1] == {"step": "first_packet", "ms": 250.0, "source": "10.0.0.7:4000"}
    assert heard[:2] == [("invite_sent", {"port": 30000}), ("first_packet", {"source": "10.0.0.7:4000"})]
    assert len(heard) == 2 + MAX_TRACE_STEPS and heard[-1] == ("ptz", {"n": MAX_TRACE_STEPS - 1})
    assert t.as_dict()["attempt"] == 2


def test_without_on_step_a_trace_only_keeps_its_steps() -> None:
    t = Trace(clock=lambda: 0.0)
    t.add("invite_sent")
    assert t.has("invite_sent") and not t.has("first_packet")
