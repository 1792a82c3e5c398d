"""api_token.expires_at: API tokens expire (issue 10 item 11)

Revision ID: sec_admin_0001
Revises: money_0001
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = 'sec_admin_0001'
down_revision = 'money_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing tokens keep working (NULL = no expiry) until revoked; new ones get one by default
    with op.batch_alter_table('api_token') as batch:
        batch.add_column(sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_token') as batch:
        batch.drop_column('expires_at')
