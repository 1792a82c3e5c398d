"""Outputs: HTTP-FLV / WS-FLV (flv_http), WHEP/WebRTC and JPEG snapshots, all fed by the StreamHub."""
