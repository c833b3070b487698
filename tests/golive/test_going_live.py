"""docs/going-live.md followed against the sandbox: the systemd units' own commands behind the Caddy TLS front.

No Docker engine runs here, so the image is not built; instead the compose file
is validated by a Compose implementation, the wheel the Dockerfile installs is
built and run outside the source tree, and the processes start from the
commands in ``deploy/systemd/*.service`` (read from the files, not copied).
Then a paid and refunded order: WeChat's notifications arrive over TLS through
Caddy, and the front shows nothing but the public routes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.keyset import DIRECT, init_keyset
from zhangben.launch import free_port
from zhangben.pgserver import ThrowawayPostgres

ROOT = Path(__file__).resolve().parents[2]
ZHANGBEN = str(Path(sys.executable).parent / "zhangben")


def unit_commands(unit: str) -> tuple[dict[str, str], list[list[str]]]:
    """A unit's ``Environment=`` and its ``ExecStartPre=``/``ExecStart=`` commands, with this checkout's zhangben."""
    env: dict[str, str] = {}
    commands: list[list[str]] = []
    for line in (ROOT / "deploy" / "systemd" / unit).read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting
        elif key in ("ExecStartPre", "ExecStart"):
            commands.append([ZHANGBEN if word == "/opt/zhangben/bin/zhangben" else word for word in shlex.split(value)])
    return env, commands


def test_the_compose_file_and_the_front_validate() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (make test installs Debian's caddy)")
    checked = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", str(ROOT / "deploy" / "Caddyfile")],
        capture_output=True,
        text=True,
        env={**os.environ, "ZHANGBEN_DOMAIN": "pay.example.com", "ZHANGBEN_TLS": "ops@example.com"},
    )
    assert checked.returncode == 0 and "Valid configuration" in checked.stdout + checked.stderr, checked.stderr
    compose = (
        [shutil.which("docker"), "compose"]
        if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        else [shutil.which("docker-compose")]
    )
    if compose[0] is None:
        pytest.skip("no Compose implementation (make test installs Debian's docker-compose)")
    env = {**os.environ, "ZHANGBEN_DOMAIN": "pay.example.com"}
    config = subprocess.run(
        [*compose, "-f", str(ROOT / "compose.yaml"), "config"], capture_output=True, text=True, env=env
    )
    assert config.returncode == 0, config.stderr
    for service in ("postgres", "migrate", "api", "work", "caddy"):
        assert re.search(rf"^  {service}:$", config.stdout, re.M), service
    published = re.findall(r"published: (\d+)|- (\d[\d.:]*):\d+", config.stdout)
    assert published  # only Caddy publishes on all interfaces; the API only on loopback
    assert "127.0.0.1:8000:8000" in (ROOT / "compose.yaml").read_text()
    unset = subprocess.run(
        [*compose, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ZHANGBEN_DOMAIN"},
        cwd=ROOT / "deploy",  # no .env there
    )
    assert unset.returncode != 0 and "ZHANGBEN_DOMAIN" in unset.stderr  # a missing domain stops it, by name


def test_the_wheel_the_image_installs_runs_outside_the_source_tree(tmp_path: Path) -> None:
    """What the Dockerfile's first stage builds carries everything (templates, API docs' assets) the second runs.

    The build context is what the Dockerfile's COPY lines take (read from it), so a
    package missing there fails here.
    """
    context = tmp_path / "context"
    context.mkdir()
    build_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", build_stage, re.M):
        for name in source.split():
            origin = ROOT / name.rstrip("/")
            if origin.is_dir():
                shutil.copytree(origin, context / origin.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(origin, context / origin.name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("zhangben-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("api/templates/") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    deps = [p for p in sys.path if p.endswith("site-packages")]
    ran = subprocess.run(
        [sys.executable, "-c", "import sys; from zhangben.cli import main; sys.exit(main(['--help']))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": os.pathsep.join([str(target), *deps]), "PATH": os.environ["PATH"]},
    )
    assert ran.returncode == 0 and "serve" in ran.stdout and "work" in ran.stdout, ran.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import api; print(api.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": os.pathsep.join([str(target), *deps])},
    )
    assert where.stdout.startswith(str(target)), where.stdout  # the wheel's code, not the checkout's


class Front:
    """Caddy with deploy/Caddyfile on free ports, its own CA, in front of a ledger port."""

    def __init__(self, root: Path, ledger_port: int) -> None:
        self.https_port, self.http_port = free_port(), free_port()
        self.base = f"https://localhost:{self.https_port}"
        self.env = {
            **os.environ,
            "ZHANGBEN_DOMAIN": "localhost",
            "ZHANGBEN_TLS": "internal",
            "ZHANGBEN_LEDGER": f"127.0.0.1:{ledger_port}",
            "ZHANGBEN_HTTPS_PORT": str(self.https_port),
            "ZHANGBEN_HTTP_PORT": str(self.http_port),
            "XDG_DATA_HOME": str(root / "caddy-data"),
            "XDG_CONFIG_HOME": str(root / "caddy-config"),
        }
        self.root_cert = root / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        self.log = (root / "caddy.log").open("wb")
        self.process = subprocess.Popen(
            ["caddy", "run", "--adapter", "caddyfile", "--config", str(ROOT / "deploy" / "Caddyfile")],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.root_cert.exists() or not self._answers():
            assert self.process.poll() is None and time.monotonic() < deadline, (root / "caddy.log").read_text()
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            httpx.get(self.base + "/", verify=ssl.create_default_context(cafile=self.root_cert), timeout=2)
            return True
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def server() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as pg:
        yield pg


def wait_until(check: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_paid_and_refunded_order_behind_tls_with_the_systemd_commands(
    server: ThrowawayPostgres, tmp_path: Path
) -> None:
    if shutil.which("caddy") is None:
        pytest.skip("caddy is not installed (make test installs Debian's caddy)")
    api_port, sandbox_port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    front = Front(tmp_path, api_port)
    try:
        # docs/going-live.md: the keys and zhangben.toml (here the sandbox's), notify_url through the front
        config, etc = tmp_path / "etc" / "zhangben.toml", tmp_path / "etc"
        init_keyset(
            etc / "keys", config, front.base, f"http://127.0.0.1:{sandbox_port}", f"https://127.0.0.1:{free_port()}"
        )
        assert f'notify_url = "{front.base}/wechatpay/v3/notify/{DIRECT.mchid}"' in config.read_text()
        credentials = tmp_path / "credentials"
        credentials.mkdir(mode=0o700)
        (credentials / "database_url").write_text(server.create_database("golive") + "\n")
        (credentials / "database_url").chmod(0o600)
        log = (tmp_path / "processes.log").open("wb")

        def start(command: list[str], env: dict[str, str]) -> None:
            processes.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))

        # WeChat (the sandbox) trusts the front's certificate as WeChat trusts a public CA's
        start(
            [ZHANGBEN, "sandbox", "--port", str(sandbox_port)],
            {**os.environ, "ZHANGBEN_CONFIG": str(config), "SSL_CERT_FILE": str(front.root_cert)},
        )
        for unit in ("zhangben-api.service", "zhangben-work.service"):
            unit_env, commands = unit_commands(unit)
            env = {**os.environ, **unit_env, "ZHANGBEN_CONFIG": str(config)}
            if "ZHANGBEN_PUBLIC_BASE_URL" in env:
                assert unit_env["ZHANGBEN_PUBLIC_BASE_URL"] == "https://pay.example.com"
                env["ZHANGBEN_PUBLIC_BASE_URL"] = front.base
            env["ZHANGBEN_DATABASE_URL_FILE"] = unit_env["ZHANGBEN_DATABASE_URL_FILE"].replace("%d", str(credentials))
            env.pop("ZHANGBEN_DATABASE_URL", None)
            *before, main = commands
            for command in before:  # ExecStartPre: db init, idempotent
                assert subprocess.run(command, env=env, cwd=tmp_path, capture_output=True).returncode == 0
            main = [str(api_port) if word == "8000" else word for word in main]
            start(main, env)
        # generous: the units start several processes while the suite's other workers load the same two cores
        wait_until(lambda: _up(f"http://127.0.0.1:{api_port}/healthz"), "the API did not start", timeout=60)
        wait_until(lambda: _up(f"http://127.0.0.1:{sandbox_port}/sandbox/clock"), "the sandbox did not start")

        key = subprocess.run(
            [ZHANGBEN, "apikey", "create", "--merchant", DIRECT.mchid, "--role", "merchant"],
            env={**env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        private = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"}, timeout=20
        )
        public = httpx.Client(
            base_url=front.base, verify=ssl.create_default_context(cafile=front.root_cert), timeout=20
        )
        with private, public:
            made = private.post(
                "/v1/orders",
                json={
                    "merchant_order_no": "LIVE-1",
                    "amount_fen": 1,
                    "description": "0.01 元 测试",
                    "channel": "native",
                },
            )
            assert made.status_code == 201, made.text
            order = made.json()
            # the payer's page through the front, over TLS
            cashier = order["cashier_url"]
            assert cashier.startswith(front.base + "/pay/"), cashier
            assert public.get(cashier).status_code == 200
            paid = httpx.post(
                f"http://127.0.0.1:{sandbox_port}/sandbox/pay",
                json={"out_trade_no": order["payment"]["out_trade_no"]},
                timeout=10,
            )
            assert paid.status_code == 200, paid.text
            wait_until(lambda: private.get("/v1/orders/LIVE-1").json()["status"] == "PAID", "not PAID")
            refund = private.post("/v1/orders/LIVE-1/refunds", json={"out_refund_no": "LIVE-1-R1", "amount_fen": 1})
            assert refund.status_code in (200, 201, 202), refund.text
            wait_until(lambda: private.get("/v1/orders/LIVE-1").json()["status"] == "REFUNDED", "not REFUNDED", 30)

            # the front: public routes only
            for private_path in ("/v1/orders", "/metrics", "/docs", "/openapi.json", "/readyz"):
                assert public.get(private_path, headers={"Authorization": f"Bearer {key}"}).status_code == 404
            plain = httpx.get(f"http://localhost:{front.http_port}/pay/x", timeout=5)
            assert plain.status_code in (301, 308) and plain.headers["location"].startswith("https://")
        front.stop()
        caddy_log = (tmp_path / "caddy.log").read_text()
        # WeChat's payment and refund notifications came in over TLS through the front
        assert caddy_log.count(f'"uri":"/wechatpay/v3/notify/{DIRECT.mchid}"') >= 2, caddy_log[-2000:]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if front.process.poll() is None:
            front.stop()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
