"""``zhangben partitions list|place``: where merchants' money lives (docs/scale-out.md)."""

from __future__ import annotations

import argparse

from bootstrap.moving import give_up_move, move_partition
from bootstrap.partitioning import directory, partition_states
from bootstrap.settings import load_settings
from zhangben import terminal
from zhangben.usage import UsageError


def cmd_partitions_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    states = partition_states(settings)
    names = sorted({name for state in states for name in state.lag})
    numbers = ("merchants", "head", *(f"lag {name}" for name in names))
    rows = [
        (
            str(s.partition),
            s.schema,
            s.database,
            str(s.merchants),
            str(s.head),
            *(str(s.lag[n]) for n in names),
            s.followed_by or "-",
        )
        for s in states
    ]
    terminal.table(("partition", "schema", "cell", *numbers, "followed by"), rows, right=numbers)
    if args.merchants:
        with directory(settings) as partitions:
            placements = partitions.directory.placements()
        terminal.table(
            ("merchant", "partition", "placed by", "placed at"),
            [(p.merchant, str(p.partition), p.placed_by, p.placed_at.isoformat()) for p in placements],
            right=("partition",),
        )
    if args.moves:
        with directory(settings) as partitions:
            moves = partitions.directory.moves()
        terminal.table(
            ("move", "partition", "from", "to", "state", "started", "finished", "note"),
            [["-" if value is None else str(value) for value in move] for move in moves],
        )
    return 0


def cmd_partitions_move(args: argparse.Namespace) -> int:
    if args.give_up:
        move = give_up_move(load_settings(), args.partition)
        print(f"move {move} of partition {args.partition} given up: it stays where it was and takes writes")
        return 0
    if not args.to:
        raise UsageError("say where to: zhangben partitions move P --to CELL (or --give-up)")
    report = move_partition(load_settings(), args.partition, args.to, say=lambda line: print(line, flush=True))
    print(
        f"moved partition {report.partition} from cell {report.from_cell} to cell {report.to_cell}: copied in "
        f"{report.copy_seconds:.1f} s, its merchants waited {report.frozen_seconds:.1f} s "
        f"(the last writes applied in {report.catch_up_seconds:.2f} s)"
    )
    return 0


def cmd_partitions_place(args: argparse.Namespace) -> int:
    with directory(load_settings()) as partitions:
        placement = partitions.place(args.merchant, args.partition)
    print(f"merchant {placement.merchant} is on partition {placement.partition} (placed by {placement.placed_by})")
    return 0
