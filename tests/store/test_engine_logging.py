"""The store's engine keeps statement parameters (tokens among them) out of logs and error messages."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from hsmcloud.store.db import make_engine
from tests.conftest import fresh_pg_database

SECRET = "token-value-Vd83Kq1Lm"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'e.db'}"
        return
    with fresh_pg_database("hsmcloud_eng") as url:
        yield url


def test_parameters_are_neither_logged_nor_in_exception_text(db_url, caplog):
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, token VARCHAR(64))"))
        caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
        with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1, :token)"), {"token": "first"})
            conn.execute(text("INSERT INTO t VALUES (1, :token)"), {"token": SECRET})  # duplicate id
    finally:
        engine.dispose()
    assert "INSERT INTO t" in caplog.text  # the statements were logged...
    assert SECRET not in caplog.text  # ...without their parameters
    assert SECRET not in str(raised.value)
