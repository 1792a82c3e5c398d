// WHEP (draft-ietf-wish-whep) with the browser's own RTCPeerConnection: one recvonly video
// transceiver, a non-trickle offer (we wait for ICE gathering: the closed network has no STUN/TURN,
// host candidates only), the SDP answer from the gateway, DELETE on the Location when we stop.
import { ApiError, getToken, withToken } from "./api.js";

function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); } };
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

export async function play(channelId, video, onState) {
  if (typeof RTCPeerConnection === "undefined") throw new ApiError(0, { error: { code: "no_webrtc", message: "no WebRTC" } });
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addEventListener("track", (ev) => {
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    video.play().catch(() => {});
  });
  pc.addEventListener("connectionstatechange", () => onState && onState(pc.connectionState));
  let location = null;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const resp = await fetch(withToken(`/live/${channelId}/whep`), {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${getToken()}` },
      body: pc.localDescription.sdp,
    });
    if (!resp.ok) {
      let body = null;
      try { body = await resp.json(); } catch { body = null; }
      throw new ApiError(resp.status, body);
    }
    location = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  } catch (err) {
    pc.close();
    throw err;
  }
  return {
    pc,
    async stop() {
      pc.close();
      video.srcObject = null;
      if (location) {
        const url = new URL(location, window.location.href);
        fetch(withToken(url.pathname + url.search), { method: "DELETE", headers: { Authorization: `Bearer ${getToken()}` } })
          .catch(() => {});
      }
    },
  };
}
