"""A simulated site of GB/T 28181 devices: product code used by `gbgate demo`, the tests and the benchmarks.

    swarm.py     DeviceSwarm: thousands of IPCs/NVRs on one loop (REGISTER, keepalive, queries, INVITE)
    devices.py   SimDevice, SimChannel, per-device state
    messages.py  request templates and digest (sans-IO)
    net.py       UDP/TCP transports and the client transaction table
    serve.py     answers the gateway's MESSAGE queries and hands INVITE/ACK/BYE to media.py
    media.py     PS over RTP from a generated test pattern
    stats.py     latency log and percentiles
    cli.py       `python -m devsim --server HOST:PORT --count N …`

It imports only the gateway's sans-IO cores (gateway.sip, gateway.gb, gateway.media): it plays
the device side, so it never reaches into the gateway's services.
"""
