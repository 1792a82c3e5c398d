"""RTP reorder buffer keyed by 16-bit sequence numbers with wrap-around (sans-IO).

UDP may reorder, duplicate or lose packets; GB/T 28181 receivers keep a small window (32–100
packets, gb28181.md §6.2) and release in order. This one is driven by packet count only: a gap
is given up ("lost") when more than `capacity` packets are held or when a packet at least
`max_delay_packets` sequence numbers past the gap has arrived; `flush()` gives up all gaps.
Sequence numbers are unwrapped to an int (RFC 3550 §A.1 style) so 65535 → 0 is just +1.
A jump of more than `max_jump` either way is a sender restart: release what is held and start
again from the new number.

Counters (exact): `received`, `released`, `lost` (sequence numbers given up), `duplicate`
(already held or already released), `late` (arrived after its number was given up),
`reordered` (released, but arrived after a higher number), `resets`.
"""

from __future__ import annotations

from gateway.media.rtp import RtpPacket


class ReorderBuffer:
    """Packet-count driven reorder window; see the module docstring for the counters."""

    __slots__ = (
        "_given_up",
        "_held",
        "_highest",
        "_next",
        "capacity",
        "duplicate",
        "late",
        "lost",
        "max_delay_packets",
        "max_jump",
        "received",
        "released",
        "reordered",
        "resets",
    )

    def __init__(self, capacity: int = 64, max_delay_packets: int | None = None, *,
                 max_jump: int = 3000) -> None:
        self.capacity = capacity
        self.max_delay_packets = capacity if max_delay_packets is None else max_delay_packets
        self.max_jump = max_jump
        self._held: dict[int, RtpPacket] = {}
        self._next: int | None = None  # extended sequence number to release next
        self._highest = -1
        self._given_up: set[int] = set()  # recent lost numbers, to tell late from duplicate
        self.received = self.released = self.lost = 0
        self.duplicate = self.late = self.reordered = self.resets = 0

    def __len__(self) -> int:
        return len(self._held)

    def accept_next(self, sequence: int) -> bool:
        """The in-order fast path: if nothing is held and `sequence` is exactly the next one,
        count it as received and released and return True (the caller passes it on itself);
        otherwise return False and change nothing (the caller uses `push`)."""
        nxt = self._next
        if nxt is None or self._held or nxt & 0xFFFF != sequence:
            return False
        self.received += 1
        self.released += 1
        self._highest = nxt  # with nothing held, everything below nxt was released or given up
        self._next = nxt + 1
        return True

    def next_in_order(self) -> int:
        """The 16-bit sequence number `accept_next` would take now, or -1 when it takes none
        (nothing seen yet, or something held). A caller taking a run of packets in order
        compares against this itself and reports the run with `accept_run`."""
        nxt = self._next
        if nxt is None or self._held:
            return -1
        return nxt & 0xFFFF

    def accept_run(self, count: int) -> None:
        """`count` packets from `next_in_order()` on were taken in order: exactly `count` calls
        of `accept_next` that returned True."""
        nxt = self._next
        assert nxt is not None and not self._held
        self.received += count
        self.released += count
        self._next = nxt = nxt + count
        self._highest = nxt - 1

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        """Add one packet; return the packets now releasable, in sequence order."""
        self.received += 1
        nxt = self._next
        if nxt is None:
            self._next = nxt = packet.sequence
            self._highest = nxt - 1
        delta = ((packet.sequence - nxt + 0x8000) & 0xFFFF) - 0x8000
        ext = nxt + delta
        out: list[RtpPacket] = []
        if delta > self.max_jump or delta < -self.max_jump:
            out = self.flush()
            self.resets += 1
            self._given_up.clear()
            self._next = ext = packet.sequence
            self._highest = ext - 1
        elif ext < nxt:
            if ext in self._given_up:
                self._given_up.discard(ext)
                self.late += 1
            else:
                self.duplicate += 1
            return out
        elif ext in self._held:
            self.duplicate += 1
            return out
        if ext < self._highest:
            self.reordered += 1
        else:
            self._highest = ext
        self._held[ext] = packet
        self._release(out)
        return out

    def _release(self, out: list[RtpPacket]) -> None:
        held = self._held
        nxt = self._next
        assert nxt is not None
        while True:
            packet = held.pop(nxt, None)
            if packet is not None:
                out.append(packet)
                self.released += 1
                nxt += 1
                continue
            if not held or (len(held) <= self.capacity and self._highest - nxt < self.max_delay_packets):
                break
            first = min(held)  # give up the gap [nxt, first)
            self._give_up(nxt, first)
            nxt = first
        self._next = nxt

    def _give_up(self, start: int, stop: int) -> None:
        self.lost += stop - start
        given = self._given_up
        if stop - start <= 4 * self.capacity:
            given.update(range(start, stop))
        if len(given) > 8 * self.capacity:  # forget the oldest: a later arrival is a duplicate
            limit = stop - 4 * self.capacity
            self._given_up = {s for s in given if s >= limit}

    def restart(self) -> None:
        """A new sender took over (re-latch): drop what the old one left; the next packet starts
        a new sequence (counted as a reset)."""
        self._held.clear()
        self._given_up.clear()
        self._next = None
        self._highest = -1
        self.resets += 1

    def flush(self) -> list[RtpPacket]:
        """Release everything held, giving up every gap (stream end or timeout)."""
        out: list[RtpPacket] = []
        while self._held:
            assert self._next is not None
            first = min(self._held)
            if first > self._next:
                self._give_up(self._next, first)
                self._next = first
            self._release_run(out)
        return out

    def _release_run(self, out: list[RtpPacket]) -> None:
        held = self._held
        nxt = self._next
        assert nxt is not None
        while (packet := held.pop(nxt, None)) is not None:
            out.append(packet)
            self.released += 1
            nxt += 1
        self._next = nxt
