"""The composition root: build every plane, start them in order, stop them in reverse.

Only this package (and the CLI) imports `adapters`; everything else receives what it needs.
`node.py` composes the planes (`store`, `health`, `sip`, `media`, `http`), each an async context
manager in its own module; `status.py` is what /healthz reads.
"""

from gateway.app.media import MEDIA_FAMILIES, MediaPlane, install_media
from gateway.app.node import Gateway
from gateway.app.sip import ENDPOINT_FAMILIES, SIP_FAMILIES
from gateway.app.store import node_secret

_secret = node_secret  # the name tests/gateway/store/test_file_modes.py imports

__all__ = ["ENDPOINT_FAMILIES", "MEDIA_FAMILIES", "SIP_FAMILIES", "Gateway", "MediaPlane", "install_media",
           "node_secret"]
