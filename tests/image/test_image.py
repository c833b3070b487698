"""The image is real: built from the repository's Dockerfile under podman and run (issue 29; `make test-image`).

The base is made from Debian's own packages and the Python packages come from a wheelhouse built on the host
(tests/image/podman.py), so nothing but the Dockerfile's BASE differs from a user's `docker build`.  The image's
own commands — ``db init``, the sandbox, ``serve --api-only``, ``work`` — run as containers on the host's network
against a throwaway PostgreSQL on loopback, and a paid and refunded order goes through the container's port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sandbox.keyset import DIRECT, init_keyset
from tests.image.podman import IMAGE, env, podman
from zhangben.launch import free_port
from zhangben.pgserver import ThrowawayPostgres

pytestmark = pytest.mark.image
UID = 10001
CONFIG = "/etc/zhangben"  # where the config and the keys are mounted, read-only


@dataclass
class Running:
    ledger: str
    sandbox: str
    config: Path
    database_url: str
    key: str


def run_args(config: Path, database_url: str, *, read_only: bool = True) -> list[str]:
    """What every container of the ledger gets: the host's network, the config and keys read-only, the database's
    URL; the root file system read-only (with a /tmp), as compose.yaml runs them."""
    args = ["--network", "host", "-v", f"{config}:{CONFIG}:ro", "-e", f"ZHANGBEN_DATABASE_URL={database_url}"]
    return args + (["--read-only", "--tmpfs", "/tmp"] if read_only else [])


def keyset(root: Path, ledger: str, sandbox: str) -> Path:
    """A development keyset and config whose paths are the container's (/etc/zhangben/…), owned by uid 10001."""
    config = root / "etc"
    init_keyset(config / "keys", config / "zhangben.toml", ledger, sandbox, f"https://127.0.0.1:{free_port()}")
    text = (config / "zhangben.toml").read_text().replace(str(config), CONFIG)
    text = text.replace('database = "var/sandbox.db"', 'database = "/srv/zhangben/sandbox.db"')
    (config / "zhangben.toml").write_text(text)
    for path in [config, *config.rglob("*")]:
        shutil.chown(path, UID, UID)
    return config


@pytest.fixture(scope="module")
def running(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("run")
    ledger_port, sandbox_port = free_port(), free_port()
    ledger, sandbox = f"http://127.0.0.1:{ledger_port}", f"http://127.0.0.1:{sandbox_port}"
    config = keyset(root, ledger, sandbox)
    server = ThrowawayPostgres()
    server.start()
    names = ["zb-test-sandbox", "zb-test-api", "zb-test-work"]
    try:
        url = server.create_database("image")
        common = run_args(config, url)
        podman("rm", "-f", *names, check=False)
        podman("run", "--rm", *common, image, "db", "init")
        podman("run", "-d", "--name", names[0], *run_args(config, url, read_only=False), image,
               "sandbox", "--port", str(sandbox_port))  # fmt: skip
        podman("run", "-d", "--name", names[1], *common, "-e", f"ZHANGBEN_HEALTH_URL={ledger}/healthz",
               "--health-interval", "disable", image,
               "serve", "--host", "127.0.0.1", "--port", str(ledger_port), "--workers", "2", "--api-only")  # fmt: skip
        podman("run", "-d", "--name", names[2], *common, image, "work")
        key = podman("run", "--rm", *common, image, "apikey", "create", "--merchant", DIRECT.mchid, "--role",
                     "merchant").stdout.strip()  # fmt: skip
        for url_up in (f"{sandbox}/sandbox/clock", f"{ledger}/healthz"):
            wait_until(lambda u=url_up: httpx.get(u, timeout=1).status_code == 200, 60, f"{url_up} in a container")
        yield Running(ledger, sandbox, config, url, key)
    finally:
        for name in names:
            logs = podman("logs", name, check=False)
            (root / f"{name}.log").write_text(logs.stdout + logs.stderr)
        podman("rm", "-f", "-t", "2", *names, check=False)
        server.stop()


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.3)


def test_the_image_holds_no_compiler_no_source_tree_and_no_secret(image: str) -> None:
    checked = podman("run", "--rm", "--network", "host", "--entrypoint", "python3", image, "-c", SCAN).stdout
    found = json.loads(checked)
    assert found["compilers"] == [], found["compilers"]  # gcc, cc, c++, clang, make: none
    assert found["source"] == [], found["source"]  # the project's packages only in site-packages
    assert found["keys"] == [], found["keys"]  # no private key material anywhere
    assert found["config"] is False  # /etc/zhangben is mounted, never baked in
    assert found["uid"] == UID and found["site"].startswith("/opt/zhangben/")
    (inspected,) = json.loads(podman("image", "inspect", image).stdout)
    health = json.dumps(inspected).split('"Healthcheck"', 1)
    assert len(health) == 2 and "/healthz" in health[1][:600]  # the HEALTHCHECK kept (docker format)


# Run inside the image: what it holds, as JSON.
SCAN = r"""
import json, os, re, shutil, api
pem = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=]{40,}")
found = {"compilers": [c for c in ("gcc", "cc", "c++", "clang", "make") if shutil.which(c)], "source": [], "keys": []}
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev")]
    if "site-packages" in top:
        continue
    for d in dirs:
        if d in ("domain", "adapters", "application", "projections", "bootstrap"):
            found["source"].append(os.path.join(top, d))
    for f in files:
        path = os.path.join(top, f)
        try:
            if os.path.getsize(path) < 2_000_000 and pem.search(open(path, "rb").read()):
                found["keys"].append(path)
        except OSError:
            pass
found["config"] = os.path.exists("/etc/zhangben")
found["uid"] = os.getuid()
found["site"] = os.path.dirname(os.path.dirname(api.__file__))
print(json.dumps(found))
"""


def test_the_containers_take_a_paid_and_refunded_order(running: Running) -> None:
    headers = {"Authorization": f"Bearer {running.key}"}
    with httpx.Client(base_url=running.ledger, headers=headers, timeout=30) as http:
        body = {"merchant_order_no": "IMG-1", "amount_fen": 1234, "description": "奶茶", "channel": "native"}
        created = http.post("/v1/orders", json=body)
        assert created.status_code == 201, created.text
        paid = httpx.post(
            f"{running.sandbox}/sandbox/pay", json={"out_trade_no": created.json()["payment"]["out_trade_no"]}
        )
        assert paid.status_code == 200, paid.text
        wait_until(lambda: http.get("/v1/orders/IMG-1").json()["status"] == "PAID", 30, "IMG-1 paid")
        refund = http.post("/v1/orders/IMG-1/refunds", json={"out_refund_no": "IMG-R1", "amount_fen": 1234})
        assert refund.status_code in (201, 202), refund.text
        wait_until(lambda: http.get("/v1/orders/IMG-1").json()["status"] == "REFUNDED", 60, "IMG-1 refunded")
        assert http.get("/v1/orders", params={"status": "REFUNDED"}).json()["orders"][0]["refunded_fen"] == 1234


def test_healthcheck_user_and_read_only_config(running: Running) -> None:
    assert podman("healthcheck", "run", "zb-test-api", check=False).returncode == 0  # the image's HEALTHCHECK
    for name in ("zb-test-api", "zb-test-work"):
        assert podman("exec", name, "id", "-u").stdout.strip() == str(UID)
    write = podman("exec", "zb-test-api", "sh", "-c", f"echo x >> {CONFIG}/zhangben.toml", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    write_root = podman("exec", "zb-test-api", "sh", "-c", "echo x > /srv/zhangben/x", check=False)
    assert write_root.returncode != 0 and "Read-only file system" in write_root.stderr


def test_sigterm_stops_each_container_within_ten_seconds(running: Running) -> None:
    """Last: the containers stop one by one, each on SIGTERM alone (podman kills only after 10 s), exit 0, and the
    ledger's state is whole (the order's events all there)."""
    for name in ("zb-test-work", "zb-test-api"):
        started = time.monotonic()
        podman("stop", "-t", "10", name)
        took = time.monotonic() - started
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert took < 10 and state["ExitCode"] == 0, (name, took, state["ExitCode"])
    history = subprocess.run(
        ["podman", "run", "--rm", *run_args(running.config, running.database_url), IMAGE,
         "history", "IMG-1", "--merchant", DIRECT.mchid, "--json"],
        capture_output=True, text=True, timeout=120, env=env(),
    )  # fmt: skip
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)["state"]["status"] == "REFUNDED"
