"""a staff member who asks to be forgotten leaves their campaigns and invites without an author

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('campaigns', 'staff_invites'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('created_by', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    for table in ('campaigns', 'staff_invites'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('created_by', existing_type=sa.Integer(), nullable=False)
