"""The use cases: one room a job over the ledger's event store, and the use cases that call WeChat.

``ledger`` is the store; ``orders``, ``reviews``, ``refunds``, ``bills``,
``apikeys``, ``catalogue``, ``audit`` and ``reads`` are its rooms (``rooms``
builds them all); ``payments``, ``refunding`` and ``payers`` call WeChat
through the merchant's ``Gateway``.  Depends on ``domain`` and ``adapters``
only.  What it needs from the read models (``projections``) it names as
small protocols, filled in by ``bootstrap`` (docs/architecture.md).
"""
