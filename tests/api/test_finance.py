"""Reconciliation against the sandbox's bill, and the finance endpoints, through the real deployment."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from openpyxl import load_workbook

from adapters.persistence import parse_url
from adapters.viewdb import ViewDatabase
from application.bills import Bills
from bootstrap.ledger import open_ledger
from sandbox.keyset import DIRECT, PUBLIC_KEY_ID
from tests.deploy import Deployment, cli_in_process
from tests.spec_merchant import SpecMerchant
from tests.spec_wechat import SpecWechat, paid_resource


def cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """``zhangben …`` as the finance clerk runs it, in the deployment's directory (``tests.deploy.cli_in_process``)."""
    return cli_in_process(deployment, *args)


def sandbox_day(deployment: Deployment) -> date:
    return date.fromisoformat(httpx.get(f"{deployment.sandbox}/sandbox/clock").json()["beijing_date"])


def to_next_day_ten(deployment: Deployment, day: date) -> None:
    now = datetime.fromisoformat(httpx.get(f"{deployment.sandbox}/sandbox/clock").json()["now"])
    target = datetime.combine(day + timedelta(days=1), datetime.min.time(), now.tzinfo) + timedelta(hours=10, minutes=1)
    if target > now:
        httpx.post(f"{deployment.sandbox}/sandbox/clock", json={"advance_seconds": (target - now).total_seconds()})


def order(deployment: Deployment, no: str, amount: int) -> str:
    with deployment.client() as http:
        created = http.post(
            "/v1/orders",
            json={"merchant_order_no": no, "amount_fen": amount, "description": "对账", "channel": "native"},
        )
        assert created.status_code == 201, created.text
        return created.json()["payment"]["out_trade_no"]


def wait(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def status(deployment: Deployment, no: str) -> str:
    with deployment.client() as http:
        return http.get(f"/v1/orders/{no}").json()["status"]


def test_a_day_reconciles_then_each_difference_is_found(deployment: Deployment) -> None:
    # a day with payments, a partial refund and a full refund: the bill matches the ledger exactly
    day = sandbox_day(deployment)
    with deployment.client() as http:
        for no, amount in (("REC-1", 6000), ("REC-2", 1300), ("REC-3", 990)):
            deployment.pay(order(deployment, no, amount))
            wait(lambda no=no: status(deployment, no) == "PAID")
        assert (
            http.post("/v1/orders/REC-1/refunds", json={"out_refund_no": "REC-1-R", "amount_fen": 2000}).status_code
            == 202
        )
        assert (
            http.post("/v1/orders/REC-3/refunds", json={"out_refund_no": "REC-3-R", "amount_fen": 990}).status_code
            == 202
        )
        wait(lambda: status(deployment, "REC-1") == "PARTIALLY_REFUNDED" and status(deployment, "REC-3") == "REFUNDED")
        # a payer with a 5 元 coupon (代金券): WeChat settles the whole 25 元, the payer paid 20 元
        deployment.pay(order(deployment, "REC-4", 2500), payer_total_fen=2000)
        wait(lambda: status(deployment, "REC-4") == "PAID")
        coupon = http.get("/v1/orders/REC-4").json()
        assert (coupon["paid_fen"], coupon["payer_total_fen"], coupon["payments"][0]["payer_total_fen"]) == (
            2500,
            2000,
            2000,
        )
        assert http.get("/v1/orders/REC-2").json()["payer_total_fen"] == 1300  # no coupon: all of it
    to_next_day_ten(deployment, day)
    result = cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", DIRECT.mchid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "differences 0" in result.stdout and "6 bill lines" in result.stdout

    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}
    ) as fin:
        report = fin.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).json()
        assert (report["matched"], report["differences"]) == (6, [])
        journal = fin.get(
            "/v1/finance/journal", params={"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
        ).json()
        balance = journal["trial_balance"]
        assert balance["debit_fen"] == balance["credit_fen"]
        assert (
            balance["accounts"]["wechat_clearing"]["debit_fen"] == balance["accounts"]["wechat_clearing"]["credit_fen"]
        )
        bank = balance["accounts"]["bank"]["debit_fen"]
        fees = balance["accounts"]["wechat_fees"]["debit_fen"]
        assert bank + fees == 6000 + 1300 + 990 + 2500 - 2000 - 990
        notes = {line["reference"]: line["note"] for line in journal["lines"] if line["account"] == "merchant_sales"}
        assert set(notes.values()) == {"", "payer paid 2000 fen, coupons 500 fen (0 of them 免充值券)"}
        csv_file = fin.get(
            "/v1/finance/journal", params={"from": day.isoformat(), "to": day.isoformat(), "format": "csv"}
        )
        assert csv_file.content.startswith("\ufeff".encode()) and b"merchant_sales" in csv_file.content
        assert fin.get("/v1/finance/reconciliation", params={"date": "2001-01-01"}).status_code == 404
    with deployment.client() as merchant:
        assert merchant.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).status_code == 403

    check_journal_xlsx(deployment, day, balance)
    check_orders_xlsx(deployment, day)
    check_clean_reconciliation_files(deployment, day, balance)
    # the CLI refuses what cannot be meant, in one line, writing nothing
    backwards = cli(deployment, "export", "orders", "--date", day.isoformat(), "--to", "2001-01-01", "--out", "x.xlsx")
    assert backwards.returncode == 2 and backwards.stderr.count("\n") == 1 and "before" in backwards.stderr
    clash = cli(deployment, "export", "orders", "--date", day.isoformat(), "--format", "csv", "--out", "x.xlsx")
    assert clash.returncode == 2 and "contradicts" in clash.stderr and not (deployment.root / "x.xlsx").exists()


def table(ws: Any) -> tuple[list[str], list[dict[str, Any]], dict[str, Any] | None]:
    """A sheet's headers, its data rows keyed by header, and its 合计 row (if any)."""
    values = list(ws.values)
    headers = list(values[0])
    rows = [dict(zip(headers, row, strict=True)) for row in values[1:]]
    totals = rows.pop() if rows and rows[-1][headers[0]] == "合计" else None
    return headers, rows, totals


def cells_under(ws: Any, header: str) -> list[Any]:
    column = [c.value for c in next(ws.iter_rows(min_row=1, max_row=1))].index(header)
    return [row[column] for row in ws.iter_rows(min_row=2)]


def check_journal_xlsx(deployment: Deployment, day: date, balance: dict[str, Any]) -> None:
    """日记账 and 试算平衡: Chinese headers, 元 as formatted numbers beside fen, dates, totals equal to the journal's."""
    path = deployment.root / "journal.xlsx"
    done = cli(
        deployment, "export", "journal", "--date", day.isoformat(), "--out", str(path), "--merchant", DIRECT.mchid
    )
    assert done.returncode == 0, done.stderr
    book = load_workbook(path)
    assert book.sheetnames == ["日记账", "试算平衡"]
    lines = book["日记账"]
    headers, rows, totals = table(lines)
    assert headers[:4] == ["商户号", "记账日期", "科目代码", "科目"] and "借方(元)" in headers and "借方(分)" in headers
    assert lines.freeze_panes == "A2" and lines.column_dimensions["I"].width > 8
    assert all(isinstance(r["记账日期"], datetime) for r in rows)  # a real date, not text
    money = [c for c in cells_under(lines, "借方(元)") if isinstance(c.value, (int, float))]
    assert money and all(c.number_format == "#,##0.00" for c in money)
    assert totals is not None and totals["借方(分)"] == totals["贷方(分)"] == sum(r["借方(分)"] for r in rows)
    day_only = cli(deployment, "export", "journal", "--date", day.isoformat(), "--format", "csv", "--out", "j.csv")
    assert day_only.returncode == 0
    trial = table(book["试算平衡"])
    by_account = {r["科目代码"]: r for r in trial[1]}
    assert by_account["merchant_sales"]["科目"] == "主营业务收入"
    for account, sums in balance["accounts"].items():
        if account in by_account:  # the journal of one day (balance above spans two)
            assert by_account[account]["借方合计(分)"] <= sums["debit_fen"]
    assert trial[2] is not None and trial[2]["借方合计(分)"] == trial[2]["贷方合计(分)"] == totals["借方(分)"]
    assert round(trial[2]["借方合计(元)"] * 100) == trial[2]["借方合计(分)"]


def check_orders_xlsx(deployment: Deployment, day: date) -> None:
    path = deployment.root / "orders.xlsx"
    done = cli(deployment, "export", "orders", "--date", day.isoformat(), "--out", str(path))
    assert done.returncode == 0, done.stderr
    _, rows, totals = table(load_workbook(path)["订单"])
    by_no = {r["商户订单号"]: r for r in rows}
    coupon = by_no["REC-4"]
    assert (coupon["实收金额(分)"], coupon["用户实付(分)"], coupon["用户实付(元)"]) == (2500, 2000, 20)
    assert coupon["商品描述"] == "对账" and coupon["状态"] == "已支付" and coupon["微信支付订单号"].startswith("42")
    assert isinstance(coupon["下单时间"], datetime) and isinstance(coupon["支付时间"], datetime)
    assert totals is not None and totals["实收金额(分)"] == sum(r["实收金额(分)"] for r in rows)


def check_clean_reconciliation_files(deployment: Deployment, day: date, balance: dict[str, Any]) -> None:
    """A clean day is not a header-only file: the summary says so, and every matched line is listed."""
    path = deployment.root / "reconciliation.xlsx"
    done = cli(deployment, "export", "reconciliation", "--date", day.isoformat(), "--out", str(path))
    assert done.returncode == 0, done.stderr
    book = load_workbook(path)
    assert book.sheetnames == ["汇总", "对账明细", "差异", "资金账单"]
    _, summary, _ = table(book["汇总"])
    items = {r["项目"]: r for r in summary if r["商户号"] == DIRECT.mchid}
    paid, refunded = items["对平：支付"], items["对平：退款"]
    assert (paid["笔数"], paid["微信账单金额(分)"], paid["账本金额(分)"]) == (4, 6000 + 1300 + 990 + 2500, 10790)
    assert (refunded["笔数"], refunded["微信账单金额(分)"]) == (2, 2000 + 990)
    assert all(items[name]["笔数"] == 0 for name in ("微信有、账本无", "账本有、微信无", "金额不符", "状态不符"))
    trades, refunds, fee = items["微信账单：交易"], items["微信账单：退款"], items["微信账单：手续费"]
    assert (trades["笔数"], trades["微信账单金额(分)"], refunds["微信账单金额(分)"]) == (4, 10790, 2990)
    net = items["净结算（交易−退款−手续费）"]["微信账单金额(分)"]
    assert net == 10790 - 2990 - fee["微信账单金额(分)"]
    # against the journal: the fee booked from this bill, and the settlement booked to the bank (T+1)
    assert fee["微信账单金额(分)"] == balance["accounts"]["wechat_fees"]["debit_fen"]
    assert net == balance["accounts"]["bank"]["debit_fen"]
    _, lines, totals = table(book["对账明细"])
    assert len(lines) == 6 and {r["对账结果"] for r in lines} == {"对平"}
    net_of_lines = 6000 + 1300 + 990 + 2500 - 2000 - 990  # refunds are negative: the 合计 is the net
    assert (
        totals is not None and totals["微信金额（退款为负）(分)"] == totals["账本金额（退款为负）(分)"] == net_of_lines
    )
    fees = cells_under(book["对账明细"], "手续费(元)")
    assert all(c.number_format == "#,##0.00000" for c in fees if c.value is not None)
    assert all(isinstance(r["交易时间"], datetime) for r in lines)
    assert table(book["差异"])[1] == []
    csv_path = deployment.root / "reconciliation.csv"
    assert (
        cli(deployment, "export", "reconciliation", "--date", day.isoformat(), "--out", str(csv_path)).returncode == 0
    )
    text = csv_path.read_bytes()
    assert text.startswith("\ufeff".encode())
    csv_rows = text.decode("utf-8-sig").splitlines()
    assert csv_rows[0].startswith("商户号 (mchid),账单日期 (date),账单行号 (line_no),交易时间 (trade_time)")
    assert "微信金额（退款为负）(元) (bill_yuan)" in csv_rows[0] and len(csv_rows) == 1 + 6 + 1
    assert csv_rows[-1].startswith("合计,")


def test_every_kind_of_difference(deployment: Deployment) -> None:
    day = sandbox_day(deployment)
    keys = deployment.root / "keys"
    wechat = SpecWechat.from_keyset(keys, DIRECT.mchid, PUBLIC_KEY_ID)
    stranger = SpecMerchant.from_files(deployment.sandbox, keys, DIRECT.mchid, PUBLIC_KEY_ID)
    deployment.faults(notifications="drop")
    try:
        # missing_in_ledger, healed: WeChat took it, the notification never came; the query heals it
        heal = order(deployment, "DIF-HEAL", 500)
        deployment.pay(heal)
        # missing_in_ledger, for a person: an order the ledger never made (paid at WeChat directly)
        stranger.call(
            "POST",
            "/v3/pay/transactions/native",
            {
                "appid": DIRECT.appid,
                "mchid": DIRECT.mchid,
                "description": "x",
                "out_trade_no": "STRANGER001",
                "notify_url": "https://m.example/n",
                "amount": {"total": 700},
            },
        )
        deployment.pay("STRANGER001")
        # missing_in_bill: the ledger was told of a payment WeChat never made
        ghost = order(deployment, "DIF-GHOST", 800)
        on_the_day = f"{day.isoformat()}T12:00:00+08:00"
        body = wechat.body(
            "TRANSACTION.SUCCESS",
            paid_resource(DIRECT.mchid, DIRECT.appid, ghost, 800, "4200000000000000000000000099", on_the_day),
        )
        assert (
            httpx.post(
                deployment.ledger + "/wechatpay/v3/notify", content=body, headers=wechat.headers(body)
            ).status_code
            == 204
        )
        # amount_mismatch: the ledger recorded another amount for WeChat's transaction
        odd = order(deployment, "DIF-AMT", 900)
        paid = deployment.pay(odd)
        body = wechat.body(
            "TRANSACTION.SUCCESS",
            paid_resource(DIRECT.mchid, DIRECT.appid, odd, 899, paid["transaction_id"], paid["success_time"]),
        )
        assert (
            httpx.post(
                deployment.ledger + "/wechatpay/v3/notify", content=body, headers=wechat.headers(body)
            ).status_code
            == 204
        )
        # status_mismatch: WeChat finished the refund, the ledger has not heard
        refunded = order(deployment, "DIF-REF", 600)
        deployment.pay(refunded)
        with deployment.client() as http:
            http.post("/v1/orders/DIF-REF/sync")
            assert (
                http.post(
                    "/v1/orders/DIF-REF/refunds", json={"out_refund_no": "DIF-REF-R", "amount_fen": 600}
                ).status_code
                == 202
            )
        time.sleep(1.5)  # the sandbox finishes the refund; its notification is dropped
    finally:
        deployment.faults(reset=True)
    to_next_day_ten(deployment, day)
    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}, timeout=60
    ) as fin:
        report = fin.post(f"/v1/finance/bills/{day.isoformat()}/import").json()
    found = {(d["kind"], d["out_trade_no"]) for d in report["found"]}
    assert ("missing_in_ledger", heal) in found
    assert ("missing_in_ledger", "STRANGER001") in found
    assert ("missing_in_bill", ghost) in found
    assert ("amount_mismatch", odd) in found
    assert ("status_mismatch", refunded) in found
    # the ledger healed what WeChat could tell it about; the rest waits for a person
    assert heal in report["healed"] and "DIF-REF-R" in report["healed"]
    left = {(d["kind"], d["out_trade_no"]) for d in report["differences"]}
    assert left == {("missing_in_ledger", "STRANGER001"), ("missing_in_bill", ghost), ("amount_mismatch", odd)}
    assert status(deployment, "DIF-HEAL") == "PAID"
    # re-importing the same day replaces, never duplicates
    again = cli(deployment, "reconcile", "--date", day.isoformat(), "--merchant", DIRECT.mchid)
    assert again.returncode == 3 and "differences 3" in again.stdout
    # the clerk's file: each kind counted in the summary, the three left in 差异, the matched ones in 对账明细
    path = deployment.root / "differences.xlsx"
    done = cli(deployment, "export", "reconciliation", "--date", day.isoformat(), "--out", str(path))
    assert done.returncode == 0, done.stderr
    book = load_workbook(path)
    items = {r["项目"]: r for r in table(book["汇总"])[1] if r["商户号"] == DIRECT.mchid}
    assert (items["微信有、账本无"]["笔数"], items["账本有、微信无"]["笔数"], items["金额不符"]["笔数"]) == (1, 1, 1)
    assert items["微信有、账本无"]["微信账单金额(分)"] == 700 and items["账本有、微信无"]["账本金额(分)"] == 800
    _, differences, _ = table(book["差异"])
    assert {(r["结果代码"], r["商户支付单号"]) for r in differences} == {
        ("missing_in_ledger", "STRANGER001"),
        ("missing_in_bill", ghost),
        ("amount_mismatch", odd),
    }
    _, lines, _ = table(book["对账明细"])
    assert {r["商户支付单号"] for r in lines if r["对账结果"] == "对平"} >= {heal, refunded}
    check_the_reconciliation_rebuilds_from_the_kept_bill(deployment, day)
    check_acknowledging_closes_the_day(deployment, day, ghost)


def check_the_reconciliation_rebuilds_from_the_kept_bill(deployment: Deployment, day: date) -> None:
    """Issue 23, point 5: the bill file is kept (compressed, under WeChat's SHA-1) with the download's requests and
    answers; the reconciliation's tables, wiped, come back the same from the kept file and the event log."""
    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}, timeout=60
    ) as fin:

        def report() -> dict[str, Any]:
            answer = fin.get("/v1/finance/reconciliation", params={"date": day.isoformat()})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        live = report()
        db = ViewDatabase(parse_url(deployment.database_url))
        try:
            ledger = open_ledger(deployment.database_url)
            try:
                sha1 = Bills(ledger).daily_bill(DIRECT.mchid, day).sha1  # type: ignore[union-attr]
            finally:
                ledger.close()
            [(size,)] = db.execute(
                "SELECT size FROM bill_files WHERE mchid = ? AND bill_date = ? AND sha1 = ?",
                (DIRECT.mchid, day.isoformat(), sha1),
            )
            db.execute("DELETE FROM bill_lines")  # the read model lost, as after a bad migration
            db.execute("DELETE FROM reconciliation_runs")
        finally:
            db.close()
        assert fin.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).status_code == 404
        done = cli(deployment, "projections", "rebuild", "reconciliation")
        assert done.returncode == 0 and "day(s) from their kept bill files" in done.stdout, done.stdout + done.stderr
        assert report() == live
    history = cli(deployment, "history", "DIF-HEAL", "--merchant", DIRECT.mchid, "--json")
    assert history.returncode == 0, history.stderr
    imported = [e for e in json.loads(history.stdout)["events"] if e["type"] == "WechatCalled"]
    assert imported, "the query that healed DIF-HEAL is kept with the payment"
    ledger = open_ledger(deployment.database_url)
    try:
        bill = Bills(ledger).daily_bill(DIRECT.mchid, day)
        assert bill is not None
        calls = [e.exchange for e in ledger.repository.event_store.get(bill.id) if hasattr(e, "exchange")]
    finally:
        ledger.close()
    assert bill.sha1 == sha1 and size > 0
    assert [c["endpoint"] for c in calls][:2] == ["bill", "bill"]  # the ticket, then the file (fund flow's after)
    assert calls[0]["response_headers"]["wechatpay-signature"] and sha1 in calls[0]["response_body"].lower()
    assert "token=***" in calls[1]["url"] and calls[1]["response_body"].startswith("[")  # the file is kept apart


def check_acknowledging_closes_the_day(deployment: Deployment, day: date, ghost: str) -> None:
    """Finance explains each difference (an event with who and why); the day closes when all are explained."""
    base = f"/v1/finance/reconciliation/{day.isoformat()}/differences"
    with httpx.Client(
        base_url=deployment.ledger, headers={"Authorization": f"Bearer {deployment.keys['finance']}"}, timeout=60
    ) as fin:
        report = fin.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).json()
        assert report["closed"] is False and report["acknowledged_total"] == 0
        ids = [d["id"] for d in report["differences"]]
        assert len(ids) == 3 and "payment-STRANGER001" not in ids  # WeChat's transaction_id names it
        assert fin.post(f"{base}/payment-nope/acknowledge", json={"note": "?"}).status_code == 404
        assert fin.post(f"{base}/{ids[0]}/acknowledge", json={"note": ""}).status_code == 422
        for number, difference_id in enumerate(ids, start=1):
            note = f"已核实 {number}"
            answer = fin.post(f"{base}/{difference_id}/acknowledge", json={"note": note})
            assert answer.status_code == 200, answer.text
            assert answer.json()["acknowledged_total"] == number and answer.json()["closed"] is (number == 3)
            acknowledged = answer.json()["difference"]["acknowledged"]
            assert acknowledged["note"] == note and acknowledged["by"].startswith("finance ")
            again = fin.post(f"{base}/{difference_id}/acknowledge", json={"note": note})  # a retry: kept once
            assert again.json()["acknowledged_total"] == number
        report = fin.get("/v1/finance/reconciliation", params={"date": day.isoformat()}).json()
        assert report["closed"] is True and all(d["acknowledged"] for d in report["differences"])
        assert any(d["out_trade_no"] == ghost for d in report["differences"])
    with deployment.client() as merchant:
        assert merchant.post(f"{base}/{ids[0]}/acknowledge", json={"note": "x"}).status_code == 403
