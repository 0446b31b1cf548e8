"""Alembic environment: runs on the connection handed over by hsmcloud.store.db.migrate."""
from alembic import context

from hsmcloud.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: take the URL from the config.
    from hsmcloud.store.db import make_engine

    connection = make_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
