"""Case list: composite indexes that serve each filter in created_at order.

``GET /v1/cases`` filters on tenant, brand or verdict and pages newest first. With one index per
column SQLite (and PostgreSQL) either scans the filtered rows and sorts them or walks created_at and
skips the others: both grow with the table. ``(column, created_at)`` serves the filter and the order
together; the single-column indexes are their prefixes and go.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("tenant", "brand", "verdict")


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        for column in _COLUMNS:
            batch.drop_index(f"ix_cases_{column}")
            batch.create_index(f"ix_cases_{column}_created_at", [column, "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        for column in _COLUMNS:
            batch.drop_index(f"ix_cases_{column}_created_at")
            batch.create_index(f"ix_cases_{column}", [column])
