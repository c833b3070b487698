"""``zhangben db init``: the event store's tables, the views' and the scheduler's, once, before workers start."""

from __future__ import annotations

import argparse

from adapters.persistence import redact
from bootstrap.settings import load_settings
from bootstrap.wiring import init_database


def cmd_db_init(args: argparse.Namespace) -> int:
    settings = load_settings()
    init_database(settings)
    print(f"event store ready: {redact(settings.database_url)}")
    return 0
