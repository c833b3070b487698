"""Partitions: where a merchant's money lives, decided once and never changed.

A deployment has a fixed number of logical partitions; each merchant (the
``sub_mchid`` of a 特约商户, else the ``mchid``) is placed on one when it is
first configured — by a stable hash of its id, or by an operator for a big
merchant — and every aggregate of its orders lives there, so no transaction
spans two partitions.  Partitions, not merchants, move between databases
(docs/scale-out.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from domain.errors import Conflict, InvalidInput

MAX_PARTITIONS = 1000  # schemas p000 … p999
BY_HASH = "hash"  # placed by the stable hash when first configured
BY_OPERATOR = "operator"  # placed by `zhangben partitions place`


class PartitionCountChanged(Conflict):
    """The configured number of partitions differs from the one the database was made with."""

    def __init__(self, stored: int, configured: int) -> None:
        super().__init__(
            f"the database was made with {stored} partition(s) and zhangben.toml says [partitioning] partitions = "
            f"{configured}: the number is fixed once chosen (merchants are placed by it); set it back to {stored}"
        )


class MerchantAlreadyPlaced(Conflict):
    """A merchant never moves between partitions (its partition moves between databases instead)."""

    def __init__(self, merchant: str, partition: int, wanted: int) -> None:
        super().__init__(
            f"merchant {merchant} is on partition {partition}, not {wanted}: a merchant never moves between "
            "partitions once placed (move the partition to another database instead)"
        )


class MoveUnderWay(Conflict):
    """A partition is moved by one ``zhangben partitions move`` at a time."""


class MoveFailed(Conflict):
    """A move that was given up: the partition stays on its cell and takes writes again (docs/scale-out.md)."""


@dataclass(frozen=True)
class Placement:
    """A merchant's partition, and how and when it was chosen."""

    merchant: str
    partition: int
    placed_by: str  # BY_HASH | BY_OPERATOR
    placed_at: datetime


def check_count(partitions: int) -> int:
    """A number of partitions a deployment may have: 1 … ``MAX_PARTITIONS``."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidInput(
            "partitions", f"partitions must be a whole number from 1 to {MAX_PARTITIONS}, not {partitions!r}"
        )
    return partitions


def check_partition(partition: int, partitions: int) -> int:
    """``partition`` is one of the deployment's ``partitions`` (numbered from 0)."""
    if not 0 <= partition < partitions:
        which = "only partition 0" if partitions == 1 else f"partitions 0 to {partitions - 1}"
        raise InvalidInput("partition", f"partition {partition} does not exist: this deployment has {which}")
    return partition


def hashed_partition(merchant: str, partitions: int) -> int:
    """The partition a merchant's id hashes to: the same on every machine, in every release (SHA-256, not ``hash``)."""
    digest = hashlib.sha256(merchant.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % check_count(partitions)
