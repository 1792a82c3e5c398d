"""GB/T 28181 cascade: gbgate as a lower platform towards each configured upper (gb28181.md §7).

    registration.py  REGISTER/keepalive towards one upper, sans-IO: (responses, now) → actions
    answers.py       the upper's MANSCDP requests decided, sans-IO: Catalog pages, DeviceInfo/Status, refusals
    uplink.py        the shell: one per [[cascade]] entry; sends through the SipEndpoint, handlers on the SipRouter
"""
