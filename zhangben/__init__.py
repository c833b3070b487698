"""zhangben (账本): an event-sourced payment ledger for WeChat Pay — what a person runs.

This package is the outermost ring: the CLI (``zhangben …``, ``serve`` and ``work`` included), the launcher
``make serve``, the tour and the tests' stacks share (``launch``), and the terminal's tables and progress bars
(``terminal``).  The use cases live in ``application/``, the wiring in ``bootstrap/`` (docs/architecture.md).
"""
