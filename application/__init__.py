"""The use cases: one method or function per thing a merchant, WeChat or a job asks of the ledger.

Depends on ``domain`` and ``adapters`` only.  What it needs from the read
models (``projections``) it names as small protocols, filled in by ``bootstrap``.
"""
