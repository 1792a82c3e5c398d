"""Import every module that declares tables, so SQLModel.metadata is complete (for Alembic)."""

from gateway.store import models  # noqa: F401

try:  # contract data and whitelist tables are added by their packages
    from gateway.store import contract  # noqa: F401
except ImportError:  # pragma: no cover - during bootstrap only
    pass
try:
    from whitelist import store as _whitelist_store  # noqa: F401
except ImportError:  # pragma: no cover
    pass
