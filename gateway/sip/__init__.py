"""SIP layer: grammar, messages, framing, digest, transactions (sans-IO) and the asyncio transport.

Public names are re-exported here; see each module for the clauses it implements.
The asyncio endpoint is not imported here (cores stay asyncio-free): use
`from gateway.sip.transport import SipEndpoint, SipApplication`.
"""

from .address import NameAddr, SipUri, Via, parse_name_addr, parse_uri, parse_via
from .digest import (
    Algorithm,
    Credentials,
    NonceIssuer,
    NonceState,
    ReplayGuard,
    authorization,
    challenge,
    ha1,
    parse_credentials,
    verify,
)
from .errors import MessageTooLarge, SipError, SipParseError, SipTimeout, TransactionError
from .events import (
    AckReceived,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    TransactionTimeout,
)
from .framer import MessageBytes, Ping, StreamFramer, parse_datagram
from .message import (
    Headers,
    Request,
    Response,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    reason_phrase,
    serialize,
)
from .transaction import TransactionLayer, TxState

__all__ = [
    "AckReceived",
    "Algorithm",
    "Credentials",
    "Event",
    "Headers",
    "MessageBytes",
    "MessageTooLarge",
    "NameAddr",
    "NonceIssuer",
    "NonceState",
    "Peer",
    "Ping",
    "ReplayGuard",
    "Request",
    "RequestReceived",
    "Response",
    "ResponseReceived",
    "Send",
    "SipError",
    "SipParseError",
    "SipTimeout",
    "SipUri",
    "StrayResponse",
    "StreamFramer",
    "TransactionError",
    "TransactionLayer",
    "TransactionTimeout",
    "TxState",
    "Via",
    "authorization",
    "challenge",
    "ha1",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_credentials",
    "parse_datagram",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "serialize",
    "verify",
]
