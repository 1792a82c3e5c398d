"""Import every module that declares tables, so SQLModel.metadata is complete (for Alembic)."""

from gateway.store import contract, models, sources  # noqa: F401
from whitelist import store as _whitelist_store  # noqa: F401
