"""catalog_node: org nodes of a lower platform's catalog, kept apart from channels (issue 14 #2)

Revision ID: plat_0001
Revises: bulk_0001
Create Date: 2026-12-03 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = 'plat_0001'
down_revision = 'bulk_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalog_node',
    sa.Column('device_id', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('node_id', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('parent_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('business_group_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('civil_code', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['device.id'], ),
    sa.PrimaryKeyConstraint('device_id', 'node_id')
    )


def downgrade() -> None:
    op.drop_table('catalog_node')
