"""zhangben (账本): an event-sourced payment ledger for WeChat Pay.

This package holds the application layer (the ``Ledger``: one method per use
case), the read helpers that turn aggregates into views, and the CLI.
"""
