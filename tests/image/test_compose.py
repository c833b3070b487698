"""compose.yaml itself, run by podman-compose: its migrate, api and work services from the image (issue 29).

The file is copied unchanged beside what an operator puts there (zhangben.toml, secrets/, .env); the images it
names are the one built from the Dockerfile and, where no registry is reachable, a stand-in for the official
PostgreSQL image under its name (tests/image/postgres/).  Caddy is not started (its image is not here, and its
configuration is tested by tests/golive/).  The sandbox runs beside it on the host's network, where the api
service reaches it through the compose network's gateway.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.keyset import DIRECT, init_keyset
from tests.image.podman import COMPOSE_IMAGE, ROOT, env, podman, postgres_image
from zhangben.launch import free_port

pytestmark = pytest.mark.image
PROJECT = "zbimagetest"
LEDGER = "http://127.0.0.1:8000"  # compose.yaml publishes the api on 127.0.0.1:8000
GATEWAY = "172.30.0.1"  # the host, seen from compose.yaml's network (172.30.0.0/24)
KEYS = "/run/secrets/zhangben/keys"


def compose(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "podman_compose", "-p", PROJECT, *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"podman-compose {' '.join(args)}: {(done.stdout + done.stderr)[-3000:]}"
    return done


def operator_layout(project: Path, sandbox_port: int) -> None:
    """What docs/going-live.md has an operator put beside compose.yaml."""
    project.mkdir()
    shutil.copy(ROOT / "compose.yaml", project / "compose.yaml")
    shutil.copytree(ROOT / "deploy", project / "deploy")
    keys = project / "secrets" / "keys"
    init_keyset(
        keys, project / "zhangben.toml", LEDGER, f"http://{GATEWAY}:{sandbox_port}", f"https://{GATEWAY}:{free_port()}"
    )
    config = (project / "zhangben.toml").read_text().replace(str(keys), KEYS)
    (project / "zhangben.toml").write_text(
        config.replace('database = "var/sandbox.db"', 'database = "/tmp/sandbox.db"')
    )
    password = secrets.token_urlsafe(18)
    (project / "secrets" / "postgres_password").write_text(password + "\n")
    (project / "secrets" / "database_url").write_text(f"postgresql://zhangben:{password}@postgres:5432/zhangben\n")
    (project / ".env").write_text("ZHANGBEN_DOMAIN=pay.example.test\n")
    for path in [keys, *keys.rglob("*")]:
        shutil.chown(path, 10001, 10001)
    for name in ("postgres_password", "database_url"):
        shutil.chown(project / "secrets" / name, 10001, 10001)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def composed(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not port_free(8000):
        pytest.fail("compose.yaml publishes 127.0.0.1:8000, which is in use (a `make serve`?): stop it", pytrace=False)
    project, sandbox_port = tmp_path_factory.mktemp("compose") / "project", free_port()
    operator_layout(project, sandbox_port)
    podman("tag", image, COMPOSE_IMAGE)
    postgres_image()
    compose(project, "down", "-v", timeout=120)
    sandbox = "zbimagetest-sandbox"
    podman("rm", "-f", sandbox, check=False)
    podman("run", "-d", "--name", sandbox, "--network", "host",
           "-v", f"{project / 'zhangben.toml'}:/etc/zhangben/zhangben.toml:ro", "-v", f"{project / 'secrets' / 'keys'}:{KEYS}:ro",
           image, "sandbox", "--host", "0.0.0.0", "--port", str(sandbox_port))  # noqa: S104  # fmt: skip
    try:
        # in the order compose.yaml's depends_on says: podman 4.3 cannot wait for "service_healthy" itself
        compose(project, "up", "-d", "--no-build", "postgres")
        wait_for(lambda: podman("exec", container("postgres"), "pg_isready", "-U", "zhangben", "-d", "zhangben",
                                check=False).returncode == 0, 60, "postgres ready")  # fmt: skip
        compose(project, "up", "-d", "--no-build", "--no-deps", "migrate")
        migrated = podman("wait", f"{PROJECT}_migrate_1", timeout=120).stdout.strip()
        assert migrated == "0", podman("logs", f"{PROJECT}_migrate_1").stderr[-2000:]
        compose(project, "up", "-d", "--no-build", "--no-deps", "api", "work")
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{LEDGER}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run([sys.executable, "-m", "podman_compose", "-p", PROJECT, "logs"], cwd=project,
                                      env=env(), capture_output=True, text=True, timeout=60)  # fmt: skip
                raise AssertionError(f"the api service did not serve: {(logs.stdout + logs.stderr)[-3000:]}")
            time.sleep(0.5)
        yield project
    finally:
        subprocess.run([sys.executable, "-m", "podman_compose", "-p", PROJECT, "down", "-v", "-t", "10"],
                       cwd=project, env=env(), capture_output=True, timeout=300)  # fmt: skip
        podman("rm", "-f", "-t", "2", sandbox, check=False)


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.5)


def container(service: str) -> str:
    found = podman("ps", "--filter", f"label=com.docker.compose.service={service}",
                   "--filter", f"label=com.docker.compose.project={PROJECT}", "--format", "{{.Names}}").stdout  # fmt: skip
    names = found.split()
    assert names, f"no running container of the {service} service"
    return names[0]


def test_compose_services_run_a_paid_and_refunded_order(composed: Path) -> None:
    key = podman("exec", container("api"), "zhangben", "apikey", "create", "--merchant", DIRECT.mchid,
                 "--role", "merchant").stdout.strip()  # fmt: skip
    with httpx.Client(base_url=LEDGER, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        body = {"merchant_order_no": "COMPOSE-1", "amount_fen": 880, "description": "奶茶", "channel": "native"}
        created = http.post("/v1/orders", json=body)
        assert created.status_code == 201, created.text
        otn = created.json()["payment"]["out_trade_no"]
        sandbox = json.loads(podman("inspect", "zbimagetest-sandbox").stdout)[0]["Args"]
        port = sandbox[sandbox.index("--port") + 1]
        assert httpx.post(f"http://127.0.0.1:{port}/sandbox/pay", json={"out_trade_no": otn}).status_code == 200
        deadline = time.monotonic() + 60
        while http.get("/v1/orders/COMPOSE-1").json()["status"] != "PAID":
            assert time.monotonic() < deadline, http.get("/v1/orders/COMPOSE-1").json()
            time.sleep(0.3)
        refund = http.post("/v1/orders/COMPOSE-1/refunds", json={"out_refund_no": "COMPOSE-R1", "amount_fen": 880})
        assert refund.status_code in (201, 202), refund.text
        while http.get("/v1/orders/COMPOSE-1").json()["status"] != "REFUNDED":
            assert time.monotonic() < deadline + 60, http.get("/v1/orders/COMPOSE-1").json()
            time.sleep(0.3)
    assert podman("exec", container("work"), "id", "-u").stdout.strip() == "10001"
