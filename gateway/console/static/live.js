// 通道/实时 Live: pick a channel, play it over WHEP, take a snapshot, copy the FLV URLs, and
// watch the stream's statistics (GET /api/v1/streams/{id}; 404/503 until a stream/media plane exists).
import { api, withToken } from "./api.js";
import { clear, errorText, h, mono, pill } from "./dom.js";
import { t } from "./i18n.js";
import { play } from "./whep.js";

const ID_RE = /^\d{20}$/;
const state = { device: "", channel: "" };

export function mount(root, { arg }) {
  const [argChannel, argDevice] = (arg || "").split("/");
  if (ID_RE.test(argChannel || "")) state.channel = argChannel;
  if (ID_RE.test(argDevice || "")) state.device = argDevice;
  let alive = true;
  let session = null;

  const deviceSel = h("select", { "aria-label": t("live.device") });
  const channelSel = h("select", { "aria-label": t("live.channel") });
  const manual = h("input.mono.idinput", {
    type: "text", inputmode: "numeric", maxlength: "20", placeholder: t("live.manual"), "aria-label": t("live.manual"),
    value: state.channel,
  });
  const playBtn = h("button.primary", { type: "button" }, t("live.play"));
  const stopBtn = h("button.ghost", { type: "button", disabled: true }, t("live.stop"));
  const snapBtn = h("button.ghost", { type: "button" }, t("live.snapshot"));
  const playState = h("span.msg", { role: "status" }, t("live.idle"));
  const video = h("video.player", { muted: true, autoplay: true, playsInline: true, controls: true });
  const snapBox = h("div.snapbox");
  const urls = h("div.urls");
  const stats = h("div.stats");
  const trace = h("div.trace");
  const ptzPad = buildPtz();

  root.append(h("div.live", {},
    h("div.pane", {},
      h("div.toolbar", {}, h("label", {}, `${t("live.device")} `, deviceSel), h("label", {}, `${t("live.channel")} `, channelSel), manual),
      h("div.toolbar", {}, playBtn, stopBtn, snapBtn, playState),
      h("div.stage", {}, video, snapBox), trace),
    h("aside.pane.side", {}, urls, ptzPad.el, h("h3", {}, t("live.stats")), stats)));

  function current() { return manual.value.trim(); }

  function setChannel(id) {
    state.channel = id;
    manual.value = id;
    manual.removeAttribute("aria-invalid");
    history.replaceState(null, "", id ? `#live/${id}${state.device ? `/${state.device}` : ""}` : "#live");
    renderUrls();
    loadStats();
  }

  function copyField(label, value) {
    const input = h("input.mono", { type: "text", readOnly: true, value, "aria-label": label });
    const btn = h("button.ghost.small", { type: "button", on: { click: async () => {
      input.select();
      let ok = false;
      try { await navigator.clipboard.writeText(value); ok = true; } catch { ok = document.execCommand && document.execCommand("copy"); }
      btn.textContent = ok ? t("live.copied") : t("live.copy");
    } } }, t("live.copy"));
    return h("div.copy", {}, h("label", {}, label), h("div.row", {}, input, btn));
  }

  /** A play token for one channel (15 min, streams only), so the API token never goes into a
   *  player's URL; falls back to the API token when the gateway offers no play tokens. */
  async function playUrl(path, id, ttl) {
    try {
      const p = await api("/api/v1/play-tokens", { method: "POST", body: { channel_id: id, ttl } });
      return `${path}?token=${encodeURIComponent(p.token)}`;
    } catch {
      return withToken(path);
    }
  }

  async function renderUrls() {
    const id = state.channel;
    if (!ID_RE.test(id)) { clear(urls); return; }
    const http = `${location.origin}${await playUrl(`/live/${id}.flv`, id, 900)}`;
    if (id !== state.channel) return;
    const ws = http.replace(/^http/, "ws");
    clear(urls, copyField(t("live.flv"), http), copyField(t("live.wsflv"), ws));
  }

  async function loadDevices() {
    try {
      const data = await api("/api/v1/devices");
      const list = (data.devices || []).sort((a, b) => (b.online - a.online) || a.id.localeCompare(b.id));
      clear(deviceSel, h("option", { value: "" }, "—"),
        list.map((d) => h("option", { value: d.id }, `${d.id} ${d.name || ""} ${d.online ? "●" : "○"}`)));
      deviceSel.value = state.device;
      if (state.device) loadChannels();
    } catch (err) {
      clear(deviceSel, h("option", { value: "" }, errorText(err)));
    }
  }

  async function loadChannels() {
    clear(channelSel, h("option", { value: "" }, t("loading")));
    if (!state.device) { clear(channelSel, h("option", { value: "" }, "—")); return; }
    try {
      const data = await api(`/api/v1/devices/${state.device}/channels`);
      clear(channelSel, h("option", { value: "" }, "—"),
        (data.channels || []).map((c) => h("option", { value: c.channel_id }, `${c.channel_id} ${c.name || ""}`)));
      channelSel.value = state.channel;
    } catch (err) {
      clear(channelSel, h("option", { value: "" }, errorText(err)));
    }
  }

  deviceSel.addEventListener("change", () => { state.device = deviceSel.value; loadChannels(); });
  channelSel.addEventListener("change", () => { if (channelSel.value) setChannel(channelSel.value); });
  manual.addEventListener("change", () => {
    const id = current();
    if (id && !ID_RE.test(id)) { manual.setAttribute("aria-invalid", "true"); playState.textContent = t("live.badid"); return; }
    setChannel(id);
  });

  function renderTrace(err) {
    const steps = err && err.detail && err.detail.trace;
    if (!steps) { clear(trace); return; }
    const items = Array.isArray(steps) ? steps : Object.entries(steps).map(([k, v]) => ({ step: k, value: v }));
    clear(trace, h("h3", {}, t("live.trace")),
      h("ol.tracelist", {}, items.map((s) => h("li.mono", {}, typeof s === "object" ? Object.values(s).map((v) => (typeof v === "object" ? JSON.stringify(v) : v)).join("  ") : String(s)))));
  }

  playBtn.addEventListener("click", async () => {
    const id = current();
    if (!ID_RE.test(id)) { manual.setAttribute("aria-invalid", "true"); playState.textContent = t("live.badid"); return; }
    setChannel(id);
    if (session) { await session.stop(); session = null; }
    playBtn.disabled = true;
    playState.className = "msg dim";
    playState.textContent = t("live.connecting");
    clear(trace);
    try {
      session = await play(id, video, (s) => {
        playState.textContent = s === "connected" ? t("live.playing") : s;
        playState.className = s === "connected" ? "msg ok" : s === "failed" ? "msg bad" : "msg dim";
      });
      stopBtn.disabled = false;
      if (!alive) { session.stop(); session = null; }
    } catch (err) {
      playState.className = "msg bad";
      playState.textContent = err.code === "no_webrtc" ? t("live.nowebrtc") : `${t("live.failed")}: ${errorText(err)}`;
      renderTrace(err);
    } finally { playBtn.disabled = false; }
    loadStats();
  });
  stopBtn.addEventListener("click", async () => {
    if (session) await session.stop();
    session = null;
    stopBtn.disabled = true;
    playState.className = "msg dim";
    playState.textContent = t("live.idle");
  });
  snapBtn.addEventListener("click", async () => {
    const id = current();
    if (!ID_RE.test(id)) { manual.setAttribute("aria-invalid", "true"); playState.textContent = t("live.badid"); return; }
    const src = await playUrl(`/live/${id}/snapshot.jpg`, id, 60);
    const img = h("img.snapshot", { alt: `${t("live.snapshot")} ${id}`, src: `${src}&t=${Date.now()}` });
    img.addEventListener("error", () => clear(snapBox, h("div.notice.warn", {}, t("live.snapfail"))));
    clear(snapBox, img);
  });

  async function loadStats() {
    const id = state.channel;
    if (!ID_RE.test(id)) { clear(stats, h("p.dim", {}, t("live.idle"))); return; }
    try {
      const s = await api(`/api/v1/streams/${id}`);
      if (!alive || id !== state.channel) return;
      const rtp = s.rtp || {};
      const row = (k, v) => [h("dt", {}, t(k)), h("dd.mono", {}, v ?? "—")];
      clear(stats, h("dl.kv", {},
        row("st.state", pill(s.state || "—", s.state === "ready" || s.state === "live" ? "ok" : "muted")),
        row("st.codec", [s.codec, s.audio_codec].filter(Boolean).join(" + ") || "—"),
        row("st.res", s.width ? `${s.width}×${s.height}` : "—"),
        row("st.fps", s.fps),
        row("st.bitrate", s.bitrate_bps != null ? `${(s.bitrate_bps / 1e6).toFixed(2)} Mbps` : "—"),
        row("st.gop", s.keyframe_interval_s != null ? `${s.keyframe_interval_s} s` : "—"),
        row("st.viewers", s.viewers),
        row("st.frames", s.frames),
        row("st.rtp", [rtp.received ?? rtp.packets, rtp.lost, rtp.reordered, rtp.duplicates ?? rtp.duplicated].map((v) => v ?? "—").join(" / ")),
        row("st.ps", rtp.ps_errors),
        row("st.spoof", rtp.dropped_wrong_source != null ? `${rtp.dropped_wrong_source} / ${rtp.dropped_wrong_ssrc}` : "—"),
        row("st.ttff", s.ttff_open_ms != null ? `${s.ttff_open_ms} ms` : "—"),
        row("st.reinvites", s.reinvites)));
    } catch (err) {
      if (!alive || id !== state.channel) return;
      let text = t("live.unavailable");
      if (err.status === 404 && err.code === "stream_not_open") text = t("live.nostream");
      else if (err.status === 503) text = t("live.nomedia");
      else if (err.status === 403) text = t("forbidden");
      clear(stats, h("p.dim", {}, text));
    }
  }

  // 云台 PTZ: hold a direction to move, release to stop (POST /api/v1/channels/{id}/ptz; audited)
  function buildPtz() {
    const speed = h("input", { type: "range", min: "1", max: "255", value: "128", "aria-label": t("ptz.speed") });
    const presetNo = h("input.mono", { type: "number", min: "1", max: "255", value: "1", "aria-label": t("ptz.preset") });
    const status = h("div.msg.small", { role: "status" });
    let moving = false;
    let queue = Promise.resolve();
    // one command at a time, in order: a quick release must not let `stop` overtake its move
    function send(action, extra = {}) { queue = queue.then(() => post(action, extra)); return queue; }
    async function post(action, extra) {
      const id = state.channel;
      if (!ID_RE.test(id || "")) { status.textContent = t("live.badid"); return; }
      try {
        await api(`/api/v1/channels/${id}/ptz`, { method: "POST", body: { action, speed: Number(speed.value), ...extra } });
        status.textContent = `${t(`ptz.${action}`)} ✓`;
      } catch (err) {
        status.textContent = `${t(`ptz.${action}`)}: ${errorText(err)}`;
      }
    }
    function hold(action, label) {
      const start = (e) => { e.preventDefault(); moving = true; send(action); };
      const stop = () => { if (moving) { moving = false; send("stop"); } };
      return h("button.ghost.ptz", { type: "button", title: t(`ptz.${action}`), "aria-label": t(`ptz.${action}`),
        dataset: { ptz: action }, on: { pointerdown: start, pointerup: stop, pointerleave: stop,
          keydown: (e) => { if (e.key === " " || e.key === "Enter") start(e); }, keyup: stop } }, label);
    }
    const grid = h("div.ptz-grid", {},
      hold("up_left", "↖"), hold("up", "↑"), hold("up_right", "↗"),
      hold("left", "←"), h("button.ghost.ptz", { type: "button", dataset: { ptz: "stop" }, "aria-label": t("ptz.stop"),
        on: { click: () => { moving = false; send("stop"); } } }, "■"), hold("right", "→"),
      hold("down_left", "↙"), hold("down", "↓"), hold("down_right", "↘"));
    const el = h("section.ptz", { "aria-label": t("ptz.title") }, h("h3", {}, t("ptz.title")),
      h("div.row", {}, grid, h("div.ptz-side", {}, hold("zoom_in", "＋"), hold("zoom_out", "－"),
        hold("focus_far", t("ptz.far")), hold("focus_near", t("ptz.near")))),
      h("label.small", {}, `${t("ptz.speed")} `, speed),
      h("div.row", {}, h("label.small", {}, `${t("ptz.preset")} `, presetNo),
        h("button.ghost.small", { type: "button", dataset: { ptz: "preset_call" },
          on: { click: () => send("preset_call", { preset: Number(presetNo.value) }) } }, t("ptz.preset_call"))),
      status);
    return { el };
  }

  loadDevices();
  renderUrls();
  loadStats();
  const timer = setInterval(loadStats, 2000);
  return () => {
    alive = false;
    clearInterval(timer);
    if (session) session.stop();
  };
}
