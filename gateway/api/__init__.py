"""HTTP API: JSON under /api/v1 with bearer tokens and roles.

`build_web_app` and `ROUTE_TABLES` live in `gateway.api.app` and are imported from here on first
use (PEP 562): a module that needs only `gateway.api.auth` (the store plane's TokenStore, so every
CLI command) does not import aiohttp's server, the console and every route with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.api.app import ROUTE_TABLES, build_web_app

__all__ = ["ROUTE_TABLES", "build_web_app"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'gateway.api' has no attribute {name!r}")
    value = getattr(importlib.import_module("gateway.api.app"), name)
    globals()[name] = value
    return value
