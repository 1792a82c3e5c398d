"""GB SSRC allocation (`y=`, our notes §5.4).

10 decimal digits: '0' live / '1' history, then digits 4–8 of the SIP domain
(`domain[3:8]`), then a 4-digit serial unique among the streams in use. WVP and
Monibuca compute it the same way. The RTP SSRC field carries the integer value.
"""

from gateway.gb.errors import GbError, SsrcExhausted

SERIALS = 10_000
_MAX_SSRC = 0xFFFFFFFF


def ssrc_to_int(s: str) -> int:
    """Integer value for the RTP header: `0106000001` → 106000001. Raises GbError."""
    text = s.strip() if isinstance(s, str) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise GbError(f"SSRC {s!r} is not up to 10 decimal digits")
    value = int(text)
    if value > _MAX_SSRC:
        raise GbError(f"SSRC {s!r} does not fit in 32 bits")
    return value


def ssrc_to_hex(s: str) -> str:
    """ZLMediaKit's default stream name for an SSRC: 8 upper-case hex digits (§5.4)."""
    return f"{ssrc_to_int(s):08X}"


class SsrcAllocator:
    """Hands out unique GB SSRCs for one SIP domain.

    Serials advance round-robin so a just-released SSRC is not reused at once (late RTP
    of a closed stream must not feed the next one). The serial is unique across live
    and history streams.
    """

    def __init__(self, domain: str, *, start: int = 1) -> None:
        text = domain.strip()
        if not (text.isascii() and text.isdigit()) or len(text) not in (10, 20):
            raise GbError(f"SSRC domain {domain!r} must be a 10-digit domain or a 20-digit ID")
        self._middle = text[3:8]
        self._used: set[int] = set()
        self._next = start % SERIALS  # random per start (the pool's choice): no reuse right after a restart

    @property
    def middle(self) -> str:
        """The five domain digits every SSRC of this allocator carries."""
        return self._middle

    def __len__(self) -> int:
        return len(self._used)

    def __contains__(self, ssrc: object) -> bool:
        serial = self._serial_of(ssrc) if isinstance(ssrc, str) else None
        return serial is not None and serial in self._used

    def allocate(self, live: bool = True) -> str:
        """A fresh SSRC string; raises SsrcExhausted when all 10,000 serials are in use."""
        if len(self._used) >= SERIALS:
            raise SsrcExhausted(f"all {SERIALS} SSRC serials in use")
        serial = self._next
        while serial in self._used:
            serial = (serial + 1) % SERIALS
        self._used.add(serial)
        self._next = (serial + 1) % SERIALS
        return f"{'0' if live else '1'}{self._middle}{serial:04d}"

    def reserve(self, ssrc: str) -> bool:
        """Mark an SSRC chosen elsewhere (e.g. an upper platform's offer) as used.

        Returns False if it does not belong to this domain or its serial is taken.
        """
        serial = self._serial_of(ssrc)
        if serial is None or serial in self._used:
            return False
        self._used.add(serial)
        return True

    def release(self, ssrc: str) -> bool:
        """Give an SSRC back; False (and nothing changes) if it was not allocated here."""
        serial = self._serial_of(ssrc)
        if serial is None or serial not in self._used:
            return False
        self._used.discard(serial)
        return True

    def _serial_of(self, ssrc: str) -> int | None:
        text = ssrc.strip()
        if len(text) != 10 or not (text.isascii() and text.isdigit()):
            return None
        if text[0] not in "01" or text[1:6] != self._middle:
            return None
        return int(text[6:])

    @staticmethod
    def ssrc_to_int(s: str) -> int:
        """Same as the module-level `ssrc_to_int`."""
        return ssrc_to_int(s)
