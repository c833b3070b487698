"""A PostgreSQL database not encoded UTF8 is refused at once, in one line (psycopg would answer bytes for every
text column of a SQL_ASCII one, and the ledger would fail later and obscurely)."""

from __future__ import annotations

import psycopg
import pytest

from adapters.persistence import DatabaseUrlError, check_reachable, parse_url
from zhangben.pgserver import ThrowawayPostgres


def test_a_sql_ascii_database_is_refused_clearly(postgres: ThrowawayPostgres) -> None:
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ascii_ledger ENCODING 'SQL_ASCII' TEMPLATE template0")
    with pytest.raises(DatabaseUrlError, match="encoded SQL_ASCII: the ledger keeps Chinese text and needs UTF8"):
        check_reachable(parse_url(postgres.url("ascii_ledger")))
    check_reachable(parse_url(postgres.create_database("utf8_ledger")))  # the throwaway server's own: UTF8
