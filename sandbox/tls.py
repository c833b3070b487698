"""The sandbox's mutual-TLS listener: ``/secapi/*`` only over a handshake with a merchant's API certificate.

WeChat refuses a ``/secapi`` request whose TLS handshake does not present the
merchant's API certificate (apiclient_cert.pem) — the connection fails before
any HTTP is spoken (https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=4_3,
"证书").  The listener trusts exactly the configured merchants' certificates.
"""

from __future__ import annotations

import ssl
import threading
import time

import uvicorn

from sandbox.app import build_app
from sandbox.config import SandboxConfig
from sandbox.service import Sandbox


def client_certificates(config: SandboxConfig) -> str:
    """The merchants' API certificates, one PEM bundle beside the sandbox's database (the trust list)."""
    path = config.database.parent / "sandbox-client-certificates.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(m.cert_pem for m in config.merchants.values() if m.cert_pem))
    return str(path)


def tls_server(sandbox: Sandbox, host: str, port: int) -> uvicorn.Server | None:
    """The listener, or None when the config names no TLS certificate (no v2 refunds then)."""
    config = sandbox.config
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    return uvicorn.Server(
        uvicorn.Config(
            build_app(sandbox, run_worker=False, tls=True),
            host=host,
            port=port,
            log_level="warning",
            log_config=None,  # the process's own (JSON) logging
            lifespan="off",
            ssl_certfile=str(config.tls_cert_file),
            ssl_keyfile=str(config.tls_key_file),
            ssl_ca_certs=client_certificates(config),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
        )
    )


def start_in_thread(server: uvicorn.Server, timeout: float = 10) -> threading.Thread:
    """Run a uvicorn server in a daemon thread (no signal handlers there) and wait until it listens."""
    thread = threading.Thread(target=server.run, name="sandbox-tls", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the sandbox's TLS listener did not start")
        time.sleep(0.01)
    return thread
