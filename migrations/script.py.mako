"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""
from alembic import op
import sqlalchemy as sa
import config.db
% if not down_revision:
import cases.search
% endif
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
% if not down_revision:
    cases.search.upgrade(op)  # what autogenerate cannot describe: SQLite's FTS5 search table
% endif


def downgrade() -> None:
% if not down_revision:
    cases.search.downgrade(op)
% endif
    ${downgrades if downgrades else "pass"}
