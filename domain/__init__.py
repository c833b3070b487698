"""The ledger's pure core: aggregates, their events, value types and errors.

Nothing in this package performs I/O or imports from the other top-level
packages; everything here can be replayed from stored events alone.
"""
