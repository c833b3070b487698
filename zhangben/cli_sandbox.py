"""``zhangben sandbox`` (the WeChat Pay sandbox alone, on loopback) and ``zhangben keys init`` (its development keyset)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from api import logs
from sandbox.app import Sandbox, build_app
from sandbox.config import SandboxConfigError, load_sandbox_config
from sandbox.keyset import init_keyset
from sandbox.tls import start_in_thread, tls_server
from zhangben.usage import UsageError


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ZHANGBEN_CONFIG", "zhangben.toml"))


def cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        config = load_sandbox_config(config_path())
    except SandboxConfigError as exc:
        raise UsageError(str(exc)) from None
    logs.configure()  # JSON, redacted, like the ledger's: its log sits beside the ledger's
    sandbox = Sandbox(config)
    tls_port = args.tls_port or config.tls_port or args.port + 1
    listener = tls_server(sandbox, args.host, tls_port)
    if listener is not None:
        try:
            start_in_thread(listener)
        except RuntimeError:
            raise UsageError(
                f"the sandbox's mutual-TLS listener could not start on {args.host}:{tls_port} (port in use?); "
                "pass --tls-port"
            ) from None
    print(
        f"WeChat Pay sandbox on http://{args.host}:{args.port} (mode {config.mode}, "
        f"{len(config.merchants)} merchants, state in {config.database})"
        + (f"; /secapi over mutual TLS on https://{args.host}:{tls_port}" if listener else ""),
        flush=True,
    )
    uvicorn.run(build_app(sandbox), host=args.host, port=args.port, log_level="warning", log_config=None)
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    for line in init_keyset(
        Path(args.dir), config_path(args.config), args.ledger_url.rstrip("/"), args.sandbox_url.rstrip("/")
    ):
        print(line)
    return 0
