"""service principals of the token endpoint (client secret hashes, public certificates)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_principals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("display_name", sa.String(length=120), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("subscription_id", sa.String(length=36), nullable=True),
        sa.Column("secret_hash", sa.String(length=200), nullable=True),
        sa.Column("cert_sha1", sa.String(length=40), nullable=True),
        sa.Column("cert_sha256", sa.String(length=64), nullable=True),
        sa.Column("cert_pem", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id"),
    )
    op.create_index("ix_service_principals_subscription_id", "service_principals", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_service_principals_subscription_id", table_name="service_principals")
    op.drop_table("service_principals")
