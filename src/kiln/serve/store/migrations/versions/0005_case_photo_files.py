"""Case photos as files beside a SQLite database: the row names its file (``serve/store/photo_files.py``).

Existing rows keep their bytes in ``data`` (``photo_file`` NULL) and read as before.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("case_images") as batch:
        batch.add_column(sa.Column("photo_file", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_images") as batch:
        batch.drop_column("photo_file")
