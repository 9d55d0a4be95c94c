"""caseworkers: "caseworker 2", a stable pseudonym per caseworker within a partner

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('caseworkers',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('partner_id', sa.String(length=64), nullable=False),
                    sa.Column('ref', sa.String(length=128), nullable=False),
                    sa.Column('number', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('id'),
                    sa.UniqueConstraint('partner_id', 'ref', name='uq_caseworkers_partner_ref'),
                    sa.UniqueConstraint('partner_id', 'number', name='uq_caseworkers_partner_number'))


def downgrade() -> None:
    op.drop_table('caseworkers')
