"""payment devices: host ports and the tenant's management credential; billing from hand-over

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("host1_port", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("host2_port", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tenant_token", sa.String(length=128), nullable=True))
    with op.batch_alter_table("dedicated_hsms") as batch:
        batch.add_column(sa.Column("billing_started_at", sa.DateTime(), nullable=True))
    # Stores from before this revision billed from creation: keep that for resources that exist.
    op.execute("UPDATE dedicated_hsms SET billing_started_at = created_at WHERE device_serial IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("dedicated_hsms") as batch:
        batch.drop_column("billing_started_at")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("tenant_token")
        batch.drop_column("host2_port")
        batch.drop_column("host1_port")
