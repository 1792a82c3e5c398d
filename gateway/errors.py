"""Root of gbgate's exception hierarchy.

GbgateError
├── ConfigError            bad configuration value (names the key)
├── StoreError             database failure
└── (per package)          gateway.sip.errors.SipError, gateway.gb.errors.GbError,
                           gateway.media.errors.MediaError, ...

Each package draws its own subtree in its errors module; foreign exceptions are
translated at the edge so callers only ever catch these.
"""


class GbgateError(Exception):
    """Base of every error gbgate raises on purpose."""


class ConfigError(GbgateError):
    """A configuration value is invalid; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class StoreError(GbgateError):
    """The database could not do what was asked."""
