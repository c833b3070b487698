"""Ids across partitions: a business event's id names its partition; partition 0's keep their old form."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.partitions import MAX_PARTITIONS, hashed_partition
from projections.business_events import event_id, seq_of


def test_partition_0_ids_are_the_ids_one_partition_always_handed_out() -> None:
    assert event_id(64) == "evt_0000000000000064"
    assert seq_of("evt_0000000000000064") == 64


@given(st.integers(0, 10**15), st.integers(0, MAX_PARTITIONS - 1), st.integers(0, MAX_PARTITIONS - 1))
def test_an_id_is_read_back_only_in_its_own_partition(seq: int, partition: int, other: int) -> None:
    text = event_id(seq, partition)
    assert seq_of(text, partition) == seq
    if other != partition:
        assert seq_of(text, other) is None  # another partition's id is not found there
    assert sorted([event_id(seq, partition), event_id(seq + 1, partition)])[0] == text  # text order is feed order


def test_the_placement_hash_is_pinned() -> None:
    """The same on every machine and release (SHA-256): a change would move merchants placed by it."""
    assert [hashed_partition(m, 8) for m in ("1900000001", "1900000109", "1900000002", "1900000209")] == [7, 6, 2, 0]
    assert hashed_partition("1900000001", 1) == 0
