"""Placing merchants on partitions: by hash when first configured, by an operator for a big one; never moved.

``db init`` places every configured merchant not yet placed (by the stable
hash, ``domain.partitions.hashed_partition``); ``zhangben partitions place``
puts a merchant where an operator wants it — before it is first configured,
or where it already is (a repeat is a no-op).  Once placed a merchant stays:
its events, views and positions are in that partition's schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from adapters.directory import Directory
from domain.partitions import BY_HASH, BY_OPERATOR, MerchantAlreadyPlaced, Placement, hashed_partition


class Partitions:
    """The deployment's partitions as its merchants see them: who is where."""

    def __init__(self, directory: Directory, clock: Callable[[], datetime]) -> None:
        self.directory = directory
        self.clock = clock

    @property
    def count(self) -> int:
        return self.directory.partition_count()

    def place_configured(self, merchants: Iterable[str]) -> list[Placement]:
        """Every merchant placed: those new to the directory by hash, the others where they are."""
        count = self.count
        return [self.directory.place(m, hashed_partition(m, count), BY_HASH, self.clock()) for m in merchants]

    def place(self, merchant: str, partition: int) -> Placement:
        """An operator's placement; refused for a merchant already on another partition."""
        placement = self.directory.place(merchant, partition, BY_OPERATOR, self.clock())
        if placement.partition != partition:
            raise MerchantAlreadyPlaced(merchant, placement.partition, partition)
        return placement

    def partition_of(self, merchant: str) -> int:
        """Where ``merchant``'s money lives; a merchant not yet placed is placed now, by hash (its first use)."""
        placement = self.directory.placement(merchant)
        if placement is None:
            placement = self.directory.place(merchant, hashed_partition(merchant, self.count), BY_HASH, self.clock())
        return placement.partition
