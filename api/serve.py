"""``zhangben serve``: the schema once, the projections in this process, N uvicorn workers."""

from __future__ import annotations

import os

import uvicorn

from adapters.persistence import parse_url
from api import logs
from projections.order_status import ProjectionRunner
from zhangben.settings import load_settings
from zhangben.wiring import build_runtime, init_database



def serve(host: str, port: int, workers: int, *, projections: bool = True) -> int:
    from zhangben.cli import UsageError

    settings = load_settings()
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > 1 and parse_url(settings.database_url).kind != "postgres":
        raise UsageError("SQLite serves one worker process; use PostgreSQL for --workers N")
    init_database(settings)  # once, here: workers never run DDL
    runtime = build_runtime(settings)  # also checks every merchant's configuration before serving
    runner = ProjectionRunner(runtime.orders) if projections else None
    if runner:
        runner.start()
    os.environ["ZHANGBEN_PROJECTIONS_RUNNING"] = "1" if projections else "0"
    logs.configure()
    print(f"zhangben ledger on http://{host}:{port} (API docs: http://{host}:{port}/docs, {workers} worker(s))",
          flush=True)
    try:
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", log_config=None)
    finally:
        if runner:
            runner.stop()
        runtime.close()
    return 0
