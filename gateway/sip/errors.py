"""Errors raised by the SIP layer.

GbgateError                     (gateway.errors)
└── SipError                    anything the SIP layer raises on purpose
    ├── SipParseError           remote: a peer sent bytes that are not valid SIP;
    │   │                       `reason` goes into "400 <reason>", `status` is the code
    │   │                       to answer with, `fatal` means TCP framing is lost
    │   └── MessageTooLarge     remote: over the configured size limit
    ├── SipTimeout              local view of a remote silence: a client transaction
    │                           got no final response (Timer B/F, RFC 3261 §17.1)
    └── TransactionError        local: misuse of the transaction API (unknown key,
                                request without a Via branch, ...)
"""

from gateway.errors import GbgateError


class SipError(GbgateError):
    """Base of every error raised by gateway.sip."""


class SipParseError(SipError):
    """A peer sent something that is not acceptable SIP.

    `reason` is short and human ("Missing Call-ID") and safe to put in a status line;
    `status` is the response code to answer with (400, or 505 for a bad SIP version);
    `fatal` is True when a stream can no longer be framed and must be closed.
    """

    def __init__(self, reason: str, *, fatal: bool = False, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal
        self.status = status


class MessageTooLarge(SipParseError):
    """A message (or its header block, or its Content-Length) exceeds the limit."""

    def __init__(self, reason: str = "Message Too Large", *, fatal: bool = True, status: int = 513) -> None:
        super().__init__(reason, fatal=fatal, status=status)


class SipTimeout(SipError):
    """A client transaction ended without a final response (Timer B/F)."""


class TransactionError(SipError):
    """The transaction API was used wrongly by local code."""
