"""whitelist_entry.channel_ranges: a lower platform's allowed channel IDs (issue 14 #2)

Revision ID: plat_0002
Revises: rtsp_0001
Create Date: 2026-12-03 11:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'plat_0002'
down_revision = 'rtsp_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing entries: "" = no restriction, as before
    with op.batch_alter_table('whitelist_entry') as batch:
        batch.add_column(sa.Column('channel_ranges', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('whitelist_entry') as batch:
        batch.drop_column('channel_ranges')
