"""Alembic environment: runs on the connection nas.store.db.upgrade passes in, or on NAS_DATABASE_URL."""

from alembic import context

from nas.settings import database_url
from nas.store.db import VERSION_TABLE, get_engine
from nas.store.models import Base

config = context.config
version_table = config.get_main_option("version_table") or VERSION_TABLE


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with get_engine(database_url()).connect() as connection:
        run(connection)
        connection.commit()
