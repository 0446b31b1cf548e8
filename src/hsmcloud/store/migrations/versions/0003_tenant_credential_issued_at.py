"""payment devices: the store no longer holds the tenant's management credential, only when it was issued

Revision ID: 0003
Revises: 0002
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("tenant_credential_issued_at", sa.DateTime(), nullable=True))
    # Devices handed over before this revision are claimed on the appliance already (it holds the
    # credential's hash); mark them issued, then forget the clear credential.
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # the store keeps naive UTC
    op.get_bind().execute(sa.text("UPDATE devices SET tenant_credential_issued_at = :now "
                                  "WHERE tenant_token IS NOT NULL"), {"now": now})
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("tenant_token")


def downgrade() -> None:
    # The clear credential is gone for good: a downgraded store has none to give (the tenant keeps its own).
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("tenant_token", sa.String(length=128), nullable=True))
        batch.drop_column("tenant_credential_issued_at")
