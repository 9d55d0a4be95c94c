"""feedback_counts: whether the help was useful, a count per partner and month, nothing else

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feedback_counts',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('partner_id', sa.String(length=64), nullable=False),
                    sa.Column('month', sa.String(length=7), nullable=False),
                    sa.Column('answer', sa.String(length=16), nullable=False),
                    sa.Column('count', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('partner_id', 'month', 'answer', name='uq_feedback_counts'))


def downgrade() -> None:
    op.drop_table('feedback_counts')
