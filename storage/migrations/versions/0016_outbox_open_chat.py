"""outbox_open_chat: a small index of the rows not yet sent, by chat

Whether a person has anything still to be sent decides if a new answer may go straight to
the sender (nothing to overtake) or must queue behind it; this is asked for every update.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

OPEN = sa.text("status IN ('pending', 'sending')")


def upgrade() -> None:
    op.create_index('ix_outbox_open_chat', 'outbox', ['channel', 'chat'], postgresql_where=OPEN, sqlite_where=OPEN)


def downgrade() -> None:
    op.drop_index('ix_outbox_open_chat', table_name='outbox')
