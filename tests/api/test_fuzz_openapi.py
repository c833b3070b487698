"""Property-based fuzzing of the OpenAPI schema: never a 5xx, and every 4xx is problem+json."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from application.apikeys import issue
from application.orders import Orders
from bootstrap.settings import Settings
from bootstrap.wiring import build_runtime, init_database
from domain.requests import OrderTerms
from sandbox.config import load_sandbox_config
from sandbox.keyset import DIRECT
from tests.fixtures_sandbox import RunningSandbox

KEY: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzz_app(keyset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("fuzz")
    sandbox = RunningSandbox(
        dataclasses.replace(load_sandbox_config(keyset / "zhangben.toml"), database=root / "sandbox.db")
    )
    url = f"sqlite:///{root}/ledger.db"
    settings_ = Settings(
        config_path=keyset / "zhangben.toml",
        database_url=url,
        wechatpay_base_url=sandbox.url,
        wechat_api_base_url=sandbox.url,
        merchants=tomllib.loads((keyset / "zhangben.toml").read_text())["merchants"],
    )
    init_database(settings_)
    runtime = build_runtime(settings_)
    ledger = runtime.ledger
    key, record = issue(DIRECT.mchid, "merchant", ledger.clock())
    ledger.save(record)
    KEY["merchant"] = key
    Orders(ledger).create_order(DIRECT.mchid, "FUZZ-1", OrderTerms(100, "fuzz", "native"))
    app = create_app(runtime, projection_running=False)
    with TestClient(app):  # runs the lifespan
        yield app
    runtime.close()
    sandbox.stop()


def problem_json_for_4xx(response: Any) -> None:
    if 400 <= response.status_code < 500 and response.status_code != 405:
        content_type = response.headers.get("content-type", [""])
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith("application/problem+json"), f"{response.status_code} as {content_type}"


def test_no_5xx_and_every_4xx_is_problem_json(fuzz_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    headers = {"Authorization": f"Bearer {KEY['merchant']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: list[int] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # the long-poll would only make the fuzzer slow, not find more
            response = case.call(headers=headers)
            statuses.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])
            problem_json_for_4xx(response)

        check()
    assert len(statuses) >= 3 * len(operations) and any(400 <= s < 500 for s in statuses)
