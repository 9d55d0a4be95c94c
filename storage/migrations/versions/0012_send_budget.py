"""send_budget: one bot's send rate shared by all its workers

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('send_budget',
                    sa.Column('channel', sa.String(length=32), nullable=False),
                    sa.Column('second', sa.BigInteger(), nullable=False),
                    sa.Column('used', sa.Integer(), nullable=False),
                    sa.Column('last_grant', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('channel', 'second'))


def downgrade() -> None:
    op.drop_table('send_budget')
