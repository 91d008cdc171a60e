"""Paper balances: ``balances`` gets ``mode``, ``session`` and ``stream_seq``, and one row per
paper/shadow account and asset (source ``ledger``).

Revision ID: 0003_paper_balances
Revises: 0002_memory
Create Date: 2026-12-06

The rows already there are venue observations (the reconciler's REST reads of the real
accounts): they become ``mode='live'``, ``session=''`` (the column defaults). The state
service keeps the paper and shadow accounts (source ``ledger``) from EXEC: the latest
``exec.balance`` snapshot plus the fills after it, unique on (mode, session, venue, asset)
by a partial index. Nothing is backfilled: an account appears with the executor's next
snapshot (published each time it starts in paper or shadow mode).

Remember: add the new revision to ``arb_common.ledger.REVISIONS`` (HEAD).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_paper_balances"
down_revision: str | None = "0002_memory"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEDGER_KEY = "uq_balances_ledger_mode_session_venue_asset"


def upgrade() -> None:
    op.add_column("balances", sa.Column("mode", sa.Text(), server_default=sa.text("'live'"),
                                        nullable=False))
    op.add_column("balances", sa.Column("session", sa.Text(), server_default=sa.text("''"),
                                        nullable=False))
    op.add_column("balances", sa.Column("stream_seq", sa.BigInteger(), nullable=True))
    op.create_index(LEDGER_KEY, "balances", ["mode", "session", "venue", "asset"], unique=True,
                    postgresql_where=sa.text("source = 'ledger'"))


def downgrade() -> None:
    # The paper accounts go with their columns (0002 had nowhere to keep them).
    op.execute("DELETE FROM balances WHERE source = 'ledger'")
    op.drop_index(LEDGER_KEY, table_name="balances")
    for column in ("stream_seq", "session", "mode"):
        op.drop_column("balances", column)
