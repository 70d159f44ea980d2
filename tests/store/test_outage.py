"""Which database errors are an outage (retried) and which are not (raised at once), on real drivers' errors."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from nas.errors import first_line
from nas.store.outage import DatabaseUnavailable, call_with_retry, is_outage
from tests.services.conftest import free_port


def error_of(url: str, statement: str) -> Exception:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    except Exception as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{statement!r} did not fail")


def test_is_outage__a_refused_connection_is_one_a_missing_table_or_a_constraint_is_not(tmp_path):
    refused = error_of(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres", "SELECT 1")
    assert isinstance(refused, OperationalError) and is_outage(refused)
    missing_table = error_of(f"sqlite:///{tmp_path / 'a.db'}", "SELECT * FROM nowhere")
    assert isinstance(missing_table, OperationalError) and not is_outage(missing_table)
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1), (1)"))
    assert not is_outage(raised.value)
    wrapped = RuntimeError("Traceback (most recent call last):\n  ...\nOperationalError: refused")
    wrapped.__context__ = refused  # how Tune's TuneError carries a searcher's error
    assert is_outage(wrapped)
    locked = OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked"))
    assert is_outage(locked)


def test_call_with_retry__waits_out_an_outage_gives_up_after_its_budget_and_never_retries_a_rejection():
    refused = error_of(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres", "SELECT 1")
    calls = []

    def recovers_on_the_third_call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise refused
        return "ok"

    assert call_with_retry(recovers_on_the_third_call, "a read", budget_s=10) == "ok" and len(calls) == 3

    def always_out() -> None:
        raise refused

    with pytest.raises(DatabaseUnavailable, match=r"unreachable for 1 s \(a write\): OperationalError"):
        call_with_retry(always_out, "a write", budget_s=1)

    rejected = []

    def rejects() -> None:
        rejected.append(1)
        raise ValueError("not a database outage")

    with pytest.raises(ValueError):
        call_with_retry(rejects, "a write", budget_s=10)
    assert len(rejected) == 1


def test_first_line__a_traceback_message_shows_its_last_line_and_long_ones_are_cut():
    assert first_line(RuntimeError("Traceback (most recent call last):\n  File x\nKeyError: 'k'")) == (
        "RuntimeError: KeyError: 'k'"
    )
    assert first_line(ValueError("one\ntwo")) == "ValueError: one"
    assert len(first_line(ValueError("x" * 500))) == 200
