"""One scheduler process, once: ``python -m tests.scheduler.run_once CONFIG DATABASE_URL SANDBOX_URL NOW_ISO``."""

from __future__ import annotations

import json
import sys
import tomllib
from datetime import datetime
from pathlib import Path

from bootstrap.settings import Settings
from bootstrap.wiring import build_runtime
from scheduler.runner import JOBS, Scheduler


def main() -> None:
    config, url, sandbox, now = sys.argv[1:5]
    settings = Settings(
        config_path=Path(config),
        database_url=url,
        wechatpay_base_url=sandbox,
        wechat_api_base_url=sandbox,
        merchants=tomllib.loads(Path(config).read_text())["merchants"],
    )
    moment = datetime.fromisoformat(now)
    rt = build_runtime(settings, clock=lambda: moment)
    try:
        print(json.dumps(Scheduler(rt, lambda: moment, JOBS).run_due(), default=str))
    finally:
        rt.close()


if __name__ == "__main__":
    main()
