"""The Alembic migrations build exactly the schema the models describe, and upgrade old stores."""
from __future__ import annotations


import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

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
        row = conn.execute(text("SELECT serial, host1_port, tenant_credential_issued_at FROM devices")).one()
    store.close()
    assert row == ("1500101", None, None)


def test_upgrade_forgets_clear_tenant_credentials(db_url):
    """0003: a payment device handed over with a clear credential in the store keeps only 'issued'."""
    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        conn.execute(text('INSERT INTO stamps (region, name, "index") VALUES (\'eastus\', \'stamp1\', 1)'))
        sid = conn.execute(text("SELECT id FROM stamps")).scalar()
        for serial, token in (("PS1", "clear-tenant-token-1234"), ("PS2", None)):
            conn.execute(text("INSERT INTO devices (serial, stamp_id, kind, role, state, loopback_address, mgmt_token, "
                              "tenant_token) VALUES (:serial, :s, 'payshield', 'customer', 'allocated', "
                              "'127.1.2.11', 't', :token)"), {"serial": serial, "s": sid, "token": token})
    engine.dispose()
    store = Store(db_url)
    with store.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("devices")}
        issued = dict(conn.execute(text("SELECT serial, tenant_credential_issued_at FROM devices")).all())
    store.close()
    assert "tenant_token" not in columns
    assert issued["PS1"] is not None and issued["PS2"] is None
