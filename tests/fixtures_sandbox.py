from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from sandbox.app import Sandbox, build_app
from sandbox.config import SandboxConfig, load_sandbox_config
from sandbox.keyset import DIRECT, PARTNER, PUBLIC_KEY_ID, init_keyset
from sandbox.tls import start_in_thread, tls_server
from tests.spec_merchant import NotifyReceiver, SpecMerchant
from zhangben.launch import free_port


class RunningSandbox:
    """A sandbox on a real loopback port, in this process."""

    def __init__(self, config: SandboxConfig) -> None:
        self.sandbox = Sandbox(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                build_app(self.sandbox), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("sandbox did not start")
            time.sleep(0.01)
        self.control = httpx.Client(base_url=self.url, timeout=10)
        self.tls_port = free_port()
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"
        self.tls = tls_server(self.sandbox, "127.0.0.1", self.tls_port)
        if self.tls is not None:
            start_in_thread(self.tls)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.tls is not None:
            self.tls.should_exit = True
        self.thread.join(timeout=5)
        self.control.close()
        self.sandbox.store.close()


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One keyset for the session (RSA key generation is the slow part); state is per test."""
    root = tmp_path_factory.mktemp("keyset")
    init_keyset(root / "keys", root / "zhangben.toml", "http://127.0.0.1:8000", "http://127.0.0.1:8900")
    return root


@pytest.fixture
def start_sandbox(keyset: Path, tmp_path: Path) -> Iterator[Callable[..., RunningSandbox]]:
    running: list[RunningSandbox] = []

    def start(mode: str = "both", database: str = "sandbox.db") -> RunningSandbox:
        config = dataclasses.replace(
            load_sandbox_config(keyset / "zhangben.toml"), mode=mode, database=tmp_path / database
        )
        server = RunningSandbox(config)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return start_sandbox()


@pytest.fixture
def receiver() -> Iterator[NotifyReceiver]:
    r = NotifyReceiver()
    yield r
    r.close()


@pytest.fixture
def merchant(sandbox: RunningSandbox, keyset: Path) -> SpecMerchant:
    m = SpecMerchant.from_files(sandbox.url, keyset / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    m.send_serial = PUBLIC_KEY_ID
    return m


@pytest.fixture
def partner(sandbox: RunningSandbox, keyset: Path) -> SpecMerchant:
    m = SpecMerchant.from_files(sandbox.url, keyset / "keys", PARTNER.mchid, PUBLIC_KEY_ID)
    m.send_serial = PUBLIC_KEY_ID
    return m
