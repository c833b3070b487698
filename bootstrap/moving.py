"""``zhangben partitions move P --to CELL``: one partition moved to another cell while the ledger runs.

The steps (docs/scale-out.md, "Moving a partition"):

1. the target's tables made by ``db init``'s own code, then emptied;
2. logical replication copies the partition's schema while it takes writes
   (``adapters.schema_copy``); the move waits until every table is copied;
3. the freeze: the directory marks the partition frozen, every process sees
   it within a poll (``bootstrap.placement_watch``) and answers that
   partition's merchants 503 (WeChat's callbacks FAIL, so WeChat retries);
   after two polls the source is locked and refuses writes for good, and the
   move waits for its marker on the target;
4. the target's sequences set, replication ended, the map flipped and the
   freeze lifted in one directory transaction: each process reopens the
   partition on its new cell;
5. after two more polls the old copy is dropped.

Anything that fails before the flip gives the move up: the target's copy is
dropped, the source takes writes again, the directory records why.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from adapters import persistence
from adapters.directory import Directory
from adapters.schema_copy import CopyError, SchemaCopy
from application.ledger import Clock
from bootstrap.clock import system_clock
from bootstrap.partitioning import directory
from bootstrap.placement_watch import WATCH_SECONDS
from bootstrap.settings import Settings, SettingsError
from bootstrap.wiring import init_partition
from domain.partitions import MoveFailed, check_partition

NOTICE_SECONDS = 2 * WATCH_SECONDS + 0.5  # every process has polled the map at least once since it changed
COPY_TIMEOUT_SECONDS = 3600.0  # the first copy of a big partition takes a while; it takes writes meanwhile
CATCH_UP_TIMEOUT_SECONDS = 60.0  # frozen and still behind after this: given up (the partition takes writes again)


@dataclass(frozen=True)
class MoveReport:
    """What a move did and how long its merchants waited."""

    partition: int
    from_cell: str
    to_cell: str
    copy_seconds: float  # the first copy, the partition taking writes all along
    frozen_seconds: float  # from the freeze to the flip: its merchants' 503s
    catch_up_seconds: float  # of the freeze, waiting for the target to apply the last writes


def move_partition(
    settings: Settings, partition: int, to_cell: str, *, clock: Clock = system_clock, say: Callable[[str], None]
) -> MoveReport:
    """Move ``partition`` to ``to_cell``; ``say`` is told each step (the CLI prints them)."""
    if to_cell not in settings.cell_names() or not settings.cells:
        raise SettingsError(f"no [[cells]] table names cell {to_cell!r}; cells: {', '.join(settings.cell_names())}")
    with directory(settings, clock) as partitions:
        placements = partitions.directory
        where = placements.databases()
        check_partition(partition, len(where))
        schema, database = where[partition]
        from_cell = settings.cell_name(database)
        if from_cell == to_cell:
            raise MoveFailed(f"partition {partition} is on cell {to_cell} already")
        source = persistence.parse_url(settings.database_of(from_cell)).in_schema(schema)
        target = persistence.parse_url(settings.database_of(to_cell)).in_schema(schema)
        move = uuid.uuid4().hex[:12]
        copy = SchemaCopy(source, target, schema, move)
        copy.check_source()
        persistence.check_reachable(target)
        placements.begin_move(move, partition, from_cell, to_cell, clock())
        say(f"move {move}: partition {partition} ({schema}) from cell {from_cell} to cell {to_cell}")
        try:
            started = time.monotonic()
            init_partition(settings, target)
            copy.prepare_target()
            copy.publish()
            copy.subscribe()
            copy.wait_copied(COPY_TIMEOUT_SECONDS)
            copied = time.monotonic() - started
            say(f"copied in {copied:.1f} s; freezing partition {partition}")
            placements.freeze_move(move)
            frozen_at = time.monotonic()
            time.sleep(NOTICE_SECONDS)  # every process answers 503 for it now, before the source refuses writes
            sequences = copy.freeze()
            caught_up = copy.wait_caught_up(CATCH_UP_TIMEOUT_SECONDS)
            copy.hand_over(sequences)
            frozen = time.monotonic() - frozen_at
            placements.finish_move(move, partition, to_cell, clock(), f"frozen {frozen:.1f} s")
        except BaseException as exc:
            _unless_flipped(placements, move, partition, (schema, from_cell, to_cell), exc)
            _give_up(copy, placements, move, clock, exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise MoveFailed(f"move {move} of partition {partition} given up, nothing changed: {exc}") from None
        say(f"partition {partition} is on cell {to_cell} (frozen {frozen:.1f} s); dropping the old copy")
        time.sleep(NOTICE_SECONDS)  # every process has reopened it on the target
        copy.drop_source()
    return MoveReport(partition, from_cell, to_cell, copied, frozen, caught_up)


def give_up_move(settings: Settings, partition: int, *, clock: Clock = system_clock) -> str:
    """An unfinished move of ``partition`` undone (its ``partitions move`` was killed, say, leaving it frozen):
    the partition stays on its cell and takes writes again; returns the move's id.  Safe at any step: the map
    flips only with the move's end, in one transaction."""
    with directory(settings, clock) as partitions:
        placements = partitions.directory
        unfinished = placements.unfinished_move(partition)
        if unfinished is None:
            raise MoveFailed(f"partition {partition} has no move under way")
        move, from_cell, to_cell = unfinished
        schema = placements.databases()[partition][0]
        source = persistence.parse_url(settings.database_of(from_cell)).in_schema(schema)
        target = persistence.parse_url(settings.database_of(to_cell)).in_schema(schema)
        _give_up(SchemaCopy(source, target, schema, move), placements, move, clock, MoveFailed("given up by hand"))
    return move


def _unless_flipped(
    placements: Directory, move: str, partition: int, where: tuple[str, str, str], exc: BaseException
) -> None:
    """Raise rather than give up when the map may already name the target (a flip committed whose answer was
    lost): giving up would drop the partition's live copy."""
    schema, from_cell, to_cell = where
    try:
        flipped = placements.databases()[partition][1] == to_cell
    except Exception:  # noqa: BLE001 — not known: nothing is undone
        raise MoveFailed(
            f"move {move}: {exc}; the directory does not say whether it finished: once it answers, `zhangben "
            f"partitions list` shows where partition {partition} is, and `partitions move {partition} --give-up` "
            "undoes the move if it did not"
        ) from None
    if flipped:
        raise MoveFailed(
            f"move {move} finished (partition {partition} is on cell {to_cell}) and then {exc}: drop the old copy "
            f"(schema {schema} on cell {from_cell}) by hand"
        ) from None


def _give_up(copy: SchemaCopy, placements: Directory, move: str, clock: Clock, exc: BaseException) -> None:
    """Undo what the move made; the directory says why (even if the undo itself fails)."""
    try:
        copy.abandon()
    finally:
        placements.fail_move(move, clock(), str(exc) if isinstance(exc, CopyError) else f"{type(exc).__name__}: {exc}")
