"""The swarm as a UAS: answers the gateway's requests (MESSAGE queries, SUBSCRIBE, INVITE…).

A MESSAGE is answered 200 OK at once, then the real answer goes back as a separate
Response MESSAGE with the same SN on a new Call-ID (§4.1). Catalog answers are split into
pages of ≤ 4 items, each with SumNum = the total, sent one after the other's 200 (§4.4).
Retransmitted requests (same Call-ID, CSeq and method) get the cached response and are
not processed again (§2.3). INVITE/ACK/BYE go to devsim/media.py.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devsim import messages
from gateway.gb import manscdp
from gateway.sip.message import Request, make_response, parse_message, serialize

if TYPE_CHECKING:
    from devsim.swarm import DeviceSwarm, DevState

log = logging.getLogger(__name__)

ANSWERED_CACHE = 20_000
Reply = Callable[[bytes], None]


class RequestHandler:
    """Dispatches requests from the gateway to the simulated device they address."""

    def __init__(self, swarm: DeviceSwarm) -> None:
        self.swarm = swarm
        self._answered: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._to_tags: dict[str, str] = {}
        self.media: Any = None  # devsim.media.MediaSessions, created on the first INVITE

    # ------------------------------------------------------------------ plumbing
    def respond(self, req: Request, status: int, reply: Reply, *, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", to_tag: str | None = None, cache: bool = True) -> bytes:
        tag = to_tag or self._to_tags.get(req.call_id) or messages.new_tag()
        resp = make_response(req, status, to_tag=tag, headers=headers or [], body=body)
        data = serialize(resp)
        if cache and status >= 200:
            self._answered[(req.call_id, req.cseq[0], req.method)] = data
            if len(self._answered) > ANSWERED_CACHE:
                self._answered.popitem(last=False)
        reply(data)
        return data

    def streams_active(self) -> int:
        return 0 if self.media is None else int(self.media.active())

    async def close(self) -> None:
        if self.media is not None:
            await self.media.close()

    def on_request(self, data: bytes, addr: Any, reply: Reply) -> None:
        counts = self.swarm.counts
        try:
            req = parse_message(data)
        except Exception:
            counts["bad_request"] += 1
            return
        if not isinstance(req, Request):
            return
        method = req.method.upper()
        counts[f"rx_{method}"] += 1
        if method != "ACK":
            cached = self._answered.get((req.call_id, req.cseq[0], req.method))
            if cached is not None:
                counts["rx_retransmission"] += 1
                reply(cached)
                return
        try:
            self._dispatch(req, method, addr, reply)
        except Exception:  # peer garbage never kills the loop
            counts["handler_error"] += 1
            log.debug("error handling %s", method, exc_info=True)

    def _dispatch(self, req: Request, method: str, addr: Any, reply: Reply) -> None:
        st = self.swarm.by_id.get(req.request_uri.user or "")
        if method in ("INVITE", "ACK", "BYE", "CANCEL", "INFO"):
            if self.media is None:
                if method != "INVITE":
                    if method != "ACK":
                        self.respond(req, 481, reply)
                    return
                if not self.swarm.media_enabled or st is None:
                    self.respond(req, 488 if st is not None else 404, reply)
                    return
                from devsim.media import MediaSessions

                self.media = MediaSessions(self)
            self.media.on_request(req, method, st, addr, reply)
            return
        if st is None:
            self.respond(req, 404, reply)
            return
        if method == "MESSAGE":
            self._on_message(req, st, reply)
        elif method == "SUBSCRIBE":
            self.respond(req, 200, reply, headers=[("Expires", req.headers.get("Expires") or "3600")])
        elif method in ("NOTIFY", "OPTIONS"):
            self.respond(req, 200, reply)
        else:
            self.respond(req, 405, reply, headers=[("Allow", "INVITE, ACK, BYE, MESSAGE, SUBSCRIBE, INFO")])

    # ------------------------------------------------------------------ MESSAGE
    def _on_message(self, req: Request, st: DevState, reply: Reply) -> None:
        self.respond(req, 200, reply)  # 200 first, answer later (§2.3, §4.1)
        try:
            msg = manscdp.parse(req.body)
        except Exception:
            self.swarm.counts["bad_manscdp"] += 1
            return
        bodies = self.answer(st, msg)
        if bodies:
            self._send_chain(st, bodies, 0)

    def answer(self, st: DevState, msg: manscdp.Manscdp) -> list[bytes]:
        """The Response bodies a device sends for one Query/Control (pure apart from `st.items`)."""
        dev, cs = st.dev, self.swarm.charset
        cmd = msg.cmd_type.lower()
        if msg.root is manscdp.Root.QUERY:
            if cmd == "catalog":
                if st.items is None:
                    st.items = messages.channel_items(dev.device_id, dev.channels, manufacturer=dev.manufacturer,
                                                     model=dev.model, civil_code=self.swarm.domain[:6])
                return messages.catalog_pages(dev.device_id, msg.sn, st.items, charset=cs)
            if cmd == "deviceinfo":
                return [manscdp.build_device_info_response(
                    dev.device_id, msg.sn, name=dev.name or dev.device_id, manufacturer=dev.manufacturer,
                    model=dev.model, firmware=dev.firmware, channel_count=len(dev.channels),
                    device_type="NVR" if len(dev.channels) > 1 else "IPC", charset=cs)]
            if cmd == "devicestatus":
                return [manscdp.build_device_status_response(
                    msg.device_id, msg.sn, device_time=time.strftime("%Y-%m-%dT%H:%M:%S"), charset=cs)]
            if cmd == "recordinfo":
                return [manscdp.build_message(
                    manscdp.Root.RESPONSE, "RecordInfo", msg.sn, msg.device_id, charset=cs,
                    fields={"Name": dev.name or dev.device_id, "SumNum": "0"},
                    body_lines=['<RecordList Num="0">', "</RecordList>"])]
            return [manscdp.build_response_result(msg.cmd_type, msg.sn, msg.device_id, charset=cs)]
        if msg.root is manscdp.Root.CONTROL and not (cmd == "devicecontrol" and msg.get("PTZCmd") is not None):
            return [manscdp.build_response_result(msg.cmd_type, msg.sn, msg.device_id, charset=cs)]
        return []

    def _send_chain(self, st: DevState, bodies: list[bytes], i: int) -> None:
        """Send bodies[i] as a MESSAGE; the next one goes after its final response (WVP's pacing)."""
        if i >= len(bodies) or self.swarm._stopping:
            if i >= len(bodies):
                self.swarm.counts["queries_answered"] += 1
            return
        branch = messages.new_branch()
        data = messages.message_request(st.local, st.dev.device_id, bodies[i], tag=st.tag,
                                       call_id=messages.new_call_id(self.swarm.local_host), cseq=20, branch=branch)

        def done(status: int, _resp: bytes | None) -> None:
            if status != 200:
                self.swarm.counts[f"response_message_{status or 'timeout'}"] += 1
            self._send_chain(st, bodies, i + 1)

        self.swarm.request(st, data, branch, done)
