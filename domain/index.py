"""Index aggregates: secondary unique keys enforced by the event store.

Saving a ``TransactionIndex`` in the same ``save()`` as the ``Payment.Paid``
makes a WeChat ``transaction_id`` impossible to record twice, even from two
processes at once: the second insert violates the primary key and the whole
save rolls back.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate

from domain import ids


class TransactionIndex(Aggregate):
    TOPIC = "zhangben.TransactionIndex"

    class Created(Aggregate.Created):
        TOPIC = "zhangben.TransactionIndex.Created"
        transaction_id: str
        out_trade_no: str

    @staticmethod
    def create_id(transaction_id: str) -> UUID:
        return ids.transaction_index_id(transaction_id)

    def __init__(self, transaction_id: str, out_trade_no: str) -> None:
        self.transaction_id = transaction_id
        self.out_trade_no = out_trade_no
