"""whitelist_audit_item: the items of a batch audit record (issue 15: one record per bulk import)

Revision ID: bulk_0001
Revises: sec_device_0001
Create Date: 2026-12-03 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = 'bulk_0001'
down_revision = 'sec_device_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('whitelist_audit_item',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('n', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('seq', 'n')
    )
    with op.batch_alter_table('whitelist_audit_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_whitelist_audit_item_target'), ['target'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('whitelist_audit_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_whitelist_audit_item_target'))
    op.drop_table('whitelist_audit_item')
