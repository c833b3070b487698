"""``zhangben demo`` as a new user runs it: the whole tour, every step held, and no secret anywhere it wrote."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.persistence import parse_url
from adapters.secretbox import DataKeys
from adapters.sessions import SessionKeys
from adapters.viewdb import ViewDatabase
from adapters.webhooks import WebhookStore

ROOT = Path(__file__).resolve().parents[1]


def keyset_secrets(keys: Path) -> dict[str, str]:
    """Every secret of the tour's keyset: the keys' files, and each line of each private key's PEM body."""
    found: dict[str, str] = {}
    for path in sorted(p for p in keys.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "PRIVATE KEY" in text:
            for line in text.splitlines():
                if len(line) >= 40 and not line.startswith("-----"):
                    found[line] = f"{path.name} (a line of the private key)"
        elif "-----BEGIN" not in text:  # certificates and public keys are public
            found[text.strip()] = path.name
    return found


def test_the_tour_holds_every_step_and_writes_no_secret(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "zhangben.cli", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "17 of 17 steps held" in result.stdout
    assert "paySign = MD5(" in result.stdout and "for the scanned product is PAID" in result.stdout
    assert "✗" not in result.stdout and "Traceback" not in result.stderr
    assert "/console" in result.stdout  # the tour ends by pointing at the console

    secrets = keyset_secrets(workdir / "keys")
    assert len(secrets) > 40  # 4 merchants' APIv3 keys, v2 keys, appsecrets and private keys, the platform's keys
    database = sqlite3.connect(workdir / "ledger.db")
    views = ViewDatabase(parse_url(f"sqlite:///{workdir / 'ledger.db'}"))
    box = DataKeys(workdir / "keys" / "data_key")  # what is stored is sealed: look for the secrets themselves
    try:
        keys = SessionKeys(views, box)
        sessions = [
            keys.get(appid, openid) or ""
            for appid, openid in database.execute("SELECT appid, openid FROM miniprogram_sessions")
        ]
        webhooks = [e.secret for e in WebhookStore(views, box).endpoints()]
        events = "\n".join(
            bytes(row[0]).decode("utf-8", "replace") for row in database.execute("SELECT state FROM stored_events")
        )
    finally:
        views.close()
        database.close()
    assert all(sessions) and sessions and webhooks and events
    secrets |= {s: "a mini-program session key" for s in sessions} | {w: "a webhook secret" for w in webhooks}

    log = (workdir / "processes.log").read_text(encoding="utf-8", errors="replace")
    assert "jscode2session" in log and "/sns/oauth2/access_token" in log  # the calls that carry secrets were logged
    for where, text in (("the processes' log", log), ("the tour's output", result.stdout + result.stderr)):
        leaked = sorted({name for secret, name in secrets.items() if secret in text})
        assert not leaked, f"{where} shows {leaked}"
        assert not re.search(r"\bzb_[0-9a-f]{16}_[A-Za-z0-9_-]{8}", text), f"{where} shows an API key"
    leaked = sorted({name for secret, name in secrets.items() if secret in events})
    assert not leaked, f"a stored event holds {leaked}"

    # monitoring (seed 000): what the tour's last step scraped has every metric ops/ names
    metrics_text = (workdir / "metrics.txt").read_text(encoding="utf-8")
    check_ops_against(metrics_text, ROOT)
    assert not any(secret in metrics_text for secret in secrets), "a metric shows a secret"


def ops_expressions(root: Path) -> list[str]:
    """Every PromQL expression of the shipped alert rules and dashboard."""
    rules = yaml.safe_load((root / "ops" / "prometheus-rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((root / "ops" / "grafana-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return exprs


def check_ops_against(metrics_text: str, root: Path) -> None:
    """Each metric the rules and the panels name is one a scrape really has (after the tour, so with samples)."""
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    samples = {s.name for f in families.values() for s in f.samples}
    exprs = ops_expressions(root)
    assert len(exprs) > 20
    named = {name for expr in exprs for name in re.findall(r"\bzhangben_[a-z_]+", expr)}
    missing = sorted(n for n in named if n not in samples and n not in families)
    assert not missing, f"the rules or the dashboard name metrics /metrics does not have: {missing}"
    for needed in (
        "zhangben_wechatpay_calls_total",
        "zhangben_orders_paid_total",
        "zhangben_order_paid_seconds_bucket",
    ):
        assert needed in samples, needed  # with samples: the tour made them count
    promtool = shutil.which("promtool")
    if promtool:  # Prometheus's own check, where it is installed
        checked = subprocess.run(
            [promtool, "check", "rules", str(root / "ops" / "prometheus-rules.yml")], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
