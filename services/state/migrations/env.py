"""Alembic environment for the ledger: URL from ``ARB_DATABASE_URL`` (psycopg 3 driver).

A caller may also pass a URL explicitly (``config.attributes["url"]``, used by tests and
by :func:`arb_state.migrate.upgrade`), which wins over the environment.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from arb_common.ledger import Base
from arb_state.partitions import is_partition

DEFAULT_URL = "postgresql+psycopg://arb@127.0.0.1:15432/arb"


def database_url() -> str:
    url = context.config.attributes.get("url") or os.environ.get("ARB_DATABASE_URL") or DEFAULT_URL
    # Accept plain postgresql:// URLs too, but always talk through psycopg 3.
    for plain in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain) :]
    return str(url)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate compares the parents only: monthly partitions are made at run time."""
    return not (type_ == "table" and name is not None and is_partition(name))


def run_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=Base.metadata,
        include_name=include_name,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, compare_type=True,
                          include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
