"""Errors raised by the GB/T 28181 application core (`gateway.gb`).

GbgateError (gateway.errors)
└── GbError                  anything GB-specific
    ├── InvalidId            not a usable 20-digit GB ID (GB/T 28181 §1 of our notes)
    ├── ManscdpError         a MANSCDP body we cannot accept; `reason` fits "400 <reason>"
    │   └── HostileXml       DTD / entity declaration / external entity refused
    ├── SdpError             an SDP body we cannot use (caller answers 488)
    ├── PtzError             a PTZCmd string that is not 8 valid bytes
    └── SsrcExhausted        no free SSRC serial left in the pool

Remote errors (ManscdpError, SdpError) describe what a peer sent; the others are
local. Parser failures from the XML library are always translated to ManscdpError.
"""

from gateway.errors import GbgateError


class GbError(GbgateError):
    """Base of every error raised by `gateway.gb`."""


class InvalidId(GbError):
    """A GB ID failed validation; the message names the problem."""


class ManscdpError(GbError):
    """A MANSCDP body was refused. `reason` is short, for a SIP "400 <reason>" phrase."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class HostileXml(ManscdpError):
    """The body declared a DTD or entities; refused without expanding anything."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__("Hostile XML refused", detail)


class SdpError(GbError):
    """An SDP body could not be parsed or lacks what a GB media session needs."""


class PtzError(GbError):
    """A PTZCmd hex string is malformed or its checksum is wrong (§4.8)."""


class SsrcExhausted(GbError):
    """Every 4-digit SSRC serial (GB §5.4) is in use."""
