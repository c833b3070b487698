"""API keys while the directory's cell fails over or freezes: a key read in the last minute stands in.

The directory's store is a fake that answers, fails as a database does, or
hangs as a frozen primary's socket does (SIGSTOP: the kernel still
acknowledges, nothing answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import psycopg
import pytest

from adapters import persistence
from application import apikeys
from application.apikeys import ApiKeys
from bootstrap.ledger import open_ledger


class Directory:
    """The directory's event-loop store over an in-memory ledger: ``mode`` is "up", "down" or "frozen"."""

    def __init__(self, repository: Any) -> None:
        self.repository = repository
        self.mode = "up"
        self.loads = 0

    async def load_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]:
        self.loads += 1
        if self.mode == "down":
            raise psycopg.OperationalError("connection to server failed")
        if self.mode == "frozen":
            await asyncio.Event().wait()  # never answers
        return {i: self.repository.get(i) for i in aggregate_ids}

    async def save(self, *aggregates: Any) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        pass

    async def close(self) -> None:
        pass


def keys_over_fake() -> tuple[ApiKeys, Directory]:
    ledger = open_ledger("memory://")
    directory = Directory(ledger.repository)
    ledger.async_store = directory
    return ApiKeys(ledger, persistence.is_unavailable), directory


def authenticate(keys: ApiKeys, key: str) -> Any:
    return asyncio.run(asyncio.wait_for(keys.authenticate_async(key), 30))  # a hang fails the test, not CI


def test_a_key_read_recently_stands_in_while_the_directory_is_down_or_frozen() -> None:
    keys, directory = keys_over_fake()
    key = keys.issue_api_key("1900000001", "merchant")
    assert authenticate(keys, key).mchid == "1900000001"  # read now: recent
    for mode in ("down", "frozen"):
        directory.mode = mode
        assert authenticate(keys, key).mchid == "1900000001", mode
        keys._down_until = 0.0  # the next request asks the directory again
    directory.mode = "down"
    assert authenticate(keys, key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # the wrong secret: still no


def test_a_key_never_read_waits_for_the_directory_and_fails_with_it() -> None:
    keys, directory = keys_over_fake()
    key = keys.issue_api_key("1900000001", "merchant")
    directory.mode = "down"
    with pytest.raises(psycopg.OperationalError):
        authenticate(keys, key)


def test_after_a_failure_the_next_requests_do_not_wait_on_the_directory_for_a_while() -> None:
    keys, directory = keys_over_fake()
    key = keys.issue_api_key("1900000001", "merchant")
    authenticate(keys, key)
    directory.mode = "frozen"
    authenticate(keys, key)
    loads = directory.loads
    for _ in range(5):
        assert authenticate(keys, key) is not None
    assert directory.loads == loads  # within RETRY_SECONDS: the recent record, no new wait


def test_a_record_older_than_the_recent_window_does_not_stand_in() -> None:
    keys, directory = keys_over_fake()
    key = keys.issue_api_key("1900000001", "merchant")
    authenticate(keys, key)
    keys._recent = {i: (record, at - apikeys.RECENT_SECONDS - 1) for i, (record, at) in keys._recent.items()}
    directory.mode = "down"
    with pytest.raises(psycopg.OperationalError):
        authenticate(keys, key)
