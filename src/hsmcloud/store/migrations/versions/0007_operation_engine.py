"""the operation engine: a lease epoch that fences workers, an operation's input and result

Revision ID: 0007_operation_engine
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_operation_engine"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("result", sa.JSON(), nullable=True))
        batch.create_index("ix_operations_target", ["target"])


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_index("ix_operations_target")
        batch.drop_column("result")
        batch.drop_column("params")
        batch.drop_column("lease_epoch")
