"""The directory and the partitions as the commands see them: ``zhangben partitions list|place`` (docs/scale-out.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from adapters import persistence
from adapters.directory import Directory
from adapters.follower_leases import FollowerLeases
from adapters.viewdb import ViewDatabase
from application.ledger import Clock, Ledger
from application.partitions import Partitions
from bootstrap.clock import system_clock
from bootstrap.ledger import open_store
from bootstrap.settings import Settings, load_settings
from bootstrap.wiring import build_views, partition_stores
from projections.sharing import now_ms


@dataclass(frozen=True)
class PartitionState:
    """One partition as ``partitions list`` shows it."""

    partition: int
    schema: str
    database: str  # its cell (``main``: the deployment's one database)
    merchants: int
    head: int  # the last id of its event log
    lag: dict[str, int]  # events each projection has still to read
    followed_by: str | None  # the process holding its projections' lease (None: nobody now)


@contextmanager
def directory(settings: Settings, clock: Clock = system_clock) -> Iterator[Partitions]:
    """The deployment's placements, on the directory's own connection (closed after)."""
    store = persistence.parse_url(settings.database_url)
    persistence.check_reachable(store)
    with closing(ViewDatabase(store.in_schema(persistence.DIRECTORY_SCHEMA))) as db:
        if not db.columns("partition_map"):
            raise persistence.DatabaseNotInitialised(f"database {store} has no directory: run `zhangben db init` first")
        yield Partitions(Directory(db), clock)


@contextmanager
def merchant_ledger(settings: Settings, merchant: str) -> Iterator[Ledger]:
    """The event log of ``merchant``'s partition (a merchant never placed: partition 0's, where it has nothing)."""
    with directory(settings) as partitions:  # reachable and initialised, or one clear line
        store = placed_store(settings, partitions.directory, merchant)
    with closing(open_store(store)) as ledger:
        yield ledger


def placed_store(settings: Settings, placements: Directory, merchant: str) -> persistence.StoreUrl:
    """The schema of ``merchant``'s partition on its cell (a merchant never placed: partition 0's)."""
    placement = placements.placement(merchant)
    return partition_stores(settings, placements.databases())[placement.partition if placement else 0]


def merchant_store(environ: dict[str, str], merchant: str) -> persistence.StoreUrl:
    """Where ``merchant``'s money is kept in the deployment that ``environ`` configures (the tests and the bench)."""
    settings = load_settings(environ)
    with directory(settings) as partitions:
        return placed_store(settings, partitions.directory, merchant)


def partition_states(settings: Settings) -> list[PartitionState]:
    """Every partition: where it lives, how many merchants, its log's head and each projection's lag."""
    with directory(settings) as partitions:
        where = partitions.directory.databases()
        stores = partition_stores(settings, where)
        placed = [p.partition for p in partitions.directory.placements()]
        holders = FollowerLeases(partitions.directory.db).holders(now_ms())
    states = []
    for partition, (schema, database) in where.items():
        ledger = open_store(stores[partition])
        try:
            with closing(ViewDatabase(stores[partition])) as db:
                followers = build_views(ledger, db).followers
                head = ledger.recorder.max_notification_id() or 0
                lag = {name: max(0, head - follower.position) for name, follower in followers.items()}
        finally:
            ledger.close()
        states.append(
            PartitionState(partition, schema, database, placed.count(partition), head, lag, holders.get(partition))
        )
    return states
