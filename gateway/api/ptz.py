"""/api/v1/channels/{channel_id}/ptz: steer a camera (GB/T 28181 DeviceControl PTZCmd, §4.8).

    POST {action, speed?, preset?}   action: left|right|up|down|up_left|up_right|down_left|
                                     down_right|zoom_in|zoom_out|focus_far|focus_near|iris_open|
                                     iris_close|preset_set|preset_call|preset_delete|stop

Moves continue until `stop` (as on every GB camera). The platform's operators, ops and admin
may steer; every command is a record in the audit chain (who, which channel, what was sent, the
device's answer) because moving a camera changes what the district sees. A channel whose
catalog says it is a fixed camera (PTZType 3) is refused without bothering the device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.api.errors import ApiError, json_body
from gateway.api.security import principal_of, require
from gateway.api.services import SERVICES
from gateway.gb import ptz
from gateway.gb.errors import PtzError
from gateway.gb.ids import is_valid_id

routes = web.RouteTableDef()

FIXED_CAMERA = 3  # catalog <PTZType>: 1 dome, 2 PTZ bullet, 3 fixed bullet, 4 remote-controlled bullet


def _int_field(data: dict[str, Any], name: str, default: int | None) -> int | None:
    value = data.get(name, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ApiError(400, "invalid_value", f"{name} must be an integer", field=name)


@routes.post("/api/v1/channels/{channel_id}/ptz")
@require("platform", "ops")
async def channel_ptz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    channel_id = request.match_info["channel_id"]
    if not is_valid_id(channel_id):
        raise ApiError(400, "invalid_value", "channel_id must be a 20-digit GB ID", field="channel_id")
    data = await json_body(request)
    action = data.get("action")
    if not isinstance(action, str):
        raise ApiError(400, "invalid_value", f"action must be one of {', '.join(ptz.ACTIONS)}", field="action")
    speed = _int_field(data, "speed", 0x80)
    number = _int_field(data, "preset", None)
    try:
        cmd = ptz.command_for(action, speed=speed if speed is not None else 0x80, preset_number=number)
    except PtzError as exc:
        field, _, text = str(exc).partition(": ")
        raise ApiError(400, "invalid_value", text, field=field) from None
    channel = await svc.repo.find_channel(channel_id)
    if channel is None:
        raise ApiError(404, "not_found", f"channel {channel_id} is not known", field="channel_id")
    if channel.ptz_type == FIXED_CAMERA:
        raise ApiError(409, "not_ptz", f"channel {channel_id} is a fixed camera (PTZType 3)", field="channel_id")
    if svc.live is None or svc.live.live_view(channel.device_id) is None:
        raise ApiError(409, "offline", f"device {channel.device_id} is not registered", field="channel_id")
    try:
        status = await svc.live.device_control(channel_id, {"PTZCmd": cmd})
    except Exception as exc:  # QueryFailed and transport errors: the device did not answer
        status, error = 0, str(exc)
    else:
        error = ""
    p = principal_of(request)
    if svc.admission is not None:
        await svc.admission.store.append_audit(
            actor=p.actor, action="ptz", target=channel_id, before=None,
            after={"device_id": channel.device_id, "action": action, "ptz_cmd": cmd, "device_status": status},
            now=datetime.fromtimestamp(svc.clock(), UTC))
    if status == 0:
        raise ApiError(504, "device_timeout", error or f"device {channel.device_id} did not answer")
    if status != 200:
        raise ApiError(502, "device_refused", f"device answered {status}", field="channel_id")
    return web.json_response({"channel_id": channel_id, "device_id": channel.device_id, "action": action,
                              "ptz_cmd": cmd, "device_status": status})
