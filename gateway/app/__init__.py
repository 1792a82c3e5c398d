"""The composition root: build every plane, start them in order, stop them in reverse.

Only this package (and the CLI) imports `adapters`; everything else receives what it needs.
`node.py` composes the planes (`store`, `health`, `sip`, `media`, `http`), each an async context
manager in its own module; `status.py` is what /healthz reads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app.media import MEDIA_FAMILIES, MediaPlane, install_media
    from gateway.app.node import Gateway
    from gateway.app.sip import ENDPOINT_FAMILIES, SIP_FAMILIES
    from gateway.app.store import node_secret

#: name → the module that defines it. Imported on first use (PEP 562), so a CLI command that needs
#: one plane (`gbgate source list` → gateway.app.sources) does not import the node, the API and
#: the media workers with it: that was 0.9 s of every such command's start-up.
_LAZY = {"MEDIA_FAMILIES": "media", "MediaPlane": "media", "install_media": "media", "Gateway": "node",
         "ENDPOINT_FAMILIES": "sip", "SIP_FAMILIES": "sip", "node_secret": "store"}

__all__ = ["ENDPOINT_FAMILIES", "MEDIA_FAMILIES", "SIP_FAMILIES", "Gateway", "MediaPlane", "install_media",
           "node_secret"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.app' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gateway.app.{module}"), name)
    globals()[name] = value
    return value
