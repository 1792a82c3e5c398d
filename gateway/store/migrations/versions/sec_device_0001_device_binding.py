"""device_binding: registration bindings that survive a restart (issue 16 #1)

Revision ID: sec_device_0001
Revises: sec_admin_0001
Create Date: 2026-12-02 23:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = 'sec_device_0001'
down_revision = 'sec_admin_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_binding',
    sa.Column('device_id', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('transport', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('host', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('contact', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('call_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('realm', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('user_agent', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('registered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('device_id')
    )
    with op.batch_alter_table('device_binding', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_binding_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('device_binding', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_binding_expires_at'))
    op.drop_table('device_binding')
