"""The Alembic migrations build exactly the schema the models describe, and upgrade old stores."""
from __future__ import annotations


import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from hsmcloud.store.db import MIGRATIONS_DIR, Store, make_engine
from hsmcloud.store.models import Base
from tests.conftest import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with fresh_pg_database("hsmcloud_mig") as url:
        yield url


def test_migrated_schema_matches_models(db_url):
    store = Store(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    store.close()
    assert diff == []


def test_upgrade_keeps_rows_of_an_older_store(db_url):
    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text('INSERT INTO stamps (region, name, "index") VALUES (\'eastus\', \'stamp1\', 1)'))
        sid = conn.execute(text("SELECT id FROM stamps")).scalar()
        conn.execute(text("INSERT INTO devices (serial, stamp_id, kind, role, state, loopback_address, mgmt_token) "
                          "VALUES ('1500101', :s, 'luna', 'customer', 'free', '127.1.1.11', 't')"), {"s": sid})
    engine.dispose()
    store = Store(db_url)  # upgrades to head on open
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT serial, host1_port, tenant_token FROM devices")).one()
    store.close()
    assert row == ("1500101", None, None)
