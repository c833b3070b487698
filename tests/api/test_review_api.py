"""A person settles what the machine cannot, through the API (issue 16): reviews, payments, differences, refusals.

Each use case is an event with who did it and why, in the order's (or the
day's) history; each is idempotent; each is allowed only to the roles it names.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.keyset import DIRECT, PARTNER, PUBLIC_KEY_ID
from tests.deploy import Deployment
from tests.spec_wechat import SpecWechat, paid_resource

CLOSE = "/v3/pay/transactions/out-trade-no/{}/close"


def create(http: httpx.Client, no: str, amount: int = 1000) -> str:
    made = http.post(
        "/v1/orders", json={"merchant_order_no": no, "amount_fen": amount, "description": "茶", "channel": "native"}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["payment"]["out_trade_no"])


def duplicate_paid(deployment: Deployment, no: str) -> tuple[str, str]:
    """An order paid twice at WeChat: the close of the first attempt is lost ("not found"), both get paid."""
    with deployment.client() as http:
        first = create(http, no)
        deployment.faults(
            endpoints={CLOSE.format(first): {"error_rate": 1, "error_code": "ORDER_NOT_EXIST", "count": 1}}
        )
        second = http.post(f"/v1/orders/{no}/payments", json={})
        assert second.status_code == 201, second.text
        second_otn = second.json()["payment"]["out_trade_no"]
        deployment.faults(reset=True)
        deployment.pay(second_otn)
        deployment.wait_status(no, "PAID")
        deployment.pay(first)  # the payer paid the first QR code too
        view = deployment.wait_status(no, "NEEDS_REVIEW")
        assert view["review_reasons"] == ["duplicate_payment"] and view["paid_fen"] == 1000
    return first, second_otn


def events_of(deployment: Deployment, no: str) -> list[dict[str, Any]]:
    with deployment.client("auditor") as auditor:
        return list(auditor.get(f"/v1/audit/orders/{no}/history").json()["events"])


def test_a_duplicate_payment_is_refunded_by_resolving_its_review(deployment: Deployment) -> None:
    duplicate, paying = duplicate_paid(deployment, "REV-DUP")
    with deployment.client("support") as support:
        # 客服 sees the order, asks WeChat, files what the payer said; it cannot refund or resolve
        assert support.get("/v1/orders/REV-DUP").status_code == 200
        assert support.post("/v1/orders/REV-DUP/sync").status_code == 200
        noted = support.post("/v1/orders/REV-DUP/review/notes", json={"note": "顾客说扫了两次码"})
        assert noted.status_code == 200 and noted.json()["notes"][-1]["note"] == "顾客说扫了两次码"
        assert noted.json()["notes"][-1]["by"].startswith("support ")
        refused = support.post("/v1/orders/REV-DUP/refunds", json={"amount_fen": 1000, "out_trade_no": duplicate})
        assert refused.status_code == 403
        body = {"note": "重复支付，退回第二笔", "action": "refund", "out_trade_no": duplicate}
        assert support.post("/v1/orders/REV-DUP/review/resolve", json=body).status_code == 403
    with deployment.client() as merchant:
        resolved = merchant.post("/v1/orders/REV-DUP/review/resolve", json=body)
        assert resolved.status_code == 200, resolved.text
        view = resolved.json()
        assert view["status"] == "PAID" and view["review_reasons"] == []
        assert view["resolution"] == {"action": "refund", "note": body["note"], "out_refund_no": f"RV{duplicate}"}
        (refund,) = view["refunds"]
        assert (refund["out_trade_no"], refund["amount_fen"], refund["out_refund_no"]) == (
            duplicate,
            1000,
            f"RV{duplicate}",
        )
        again = merchant.post("/v1/orders/REV-DUP/review/resolve", json=body)  # a retry changes nothing
        assert again.status_code == 200 and len(again.json()["refunds"]) == 1
        deadline = time.monotonic() + 10
        while merchant.get(f"/v1/refunds/RV{duplicate}").json()["status"] != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        final = merchant.get("/v1/orders/REV-DUP").json()
        assert final["status"] == "PAID" and final["paid_fen"] == 1000  # the order keeps its one payment
    resolutions = [e for e in events_of(deployment, "REV-DUP") if e["type"] == "ReviewResolved"]
    assert len(resolutions) == 1 and resolutions[0]["data"]["by"].startswith("merchant ")
    assert resolutions[0]["data"]["note"] == body["note"] and resolutions[0]["data"]["action"] == "refund"
    assert paying != duplicate


def wait_refund(merchant: httpx.Client, out_refund_no: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while (refund := merchant.get(f"/v1/refunds/{out_refund_no}").json())["status"] != status:
        assert time.monotonic() < deadline, refund
        time.sleep(0.1)
    return dict(refund)


def test_a_review_refund_wechat_refuses_leaves_the_review_open_and_the_retry_makes_a_new_refund(
    deployment: Deployment,
) -> None:
    """Issue 23, point 1: the duplicate 1,000 fen go back, or the order stays in the review queue."""
    duplicate, _ = duplicate_paid(deployment, "REV-NE")
    body = {"note": "重复支付，退回第二笔", "action": "refund", "out_trade_no": duplicate}
    with deployment.client() as merchant:
        deployment.faults(refund_balance_fen=0)
        refused = merchant.post("/v1/orders/REV-NE/review/resolve", json=body)
        assert refused.status_code == 409 and refused.json()["code"] == "NOT_ENOUGH", refused.text
        view = merchant.get("/v1/orders/REV-NE").json()
        assert view["status"] == "NEEDS_REVIEW" and view.get("resolution") is None
        assert merchant.get(f"/v1/refunds/RV{duplicate}").json()["status"] == "CLOSED"
        queue = merchant.get("/v1/orders", params={"status": "NEEDS_REVIEW"}).json()["orders"]
        assert "REV-NE" in [o["merchant_order_no"] for o in queue]
        deployment.faults(reset=True)
        retried = merchant.post("/v1/orders/REV-NE/review/resolve", json=body)
        assert retried.status_code == 200, retried.text
        assert retried.json()["resolution"]["out_refund_no"] == f"RV{duplicate}-2"  # never the dead one again
        assert wait_refund(merchant, f"RV{duplicate}-2", "SUCCESS")["amount_fen"] == 1000
        final = deployment.wait_status("REV-NE", "PAID")
        assert {r["out_refund_no"]: r["status"] for r in final["refunds"]} == {
            f"RV{duplicate}": "CLOSED",
            f"RV{duplicate}-2": "SUCCESS",
        }


def test_an_overpaid_order_gives_its_surplus_back_after_a_refused_first_try(deployment: Deployment) -> None:
    """Paid 1,500 for 1,000: the surplus 500 goes back (the sandbox refunds what it says was paid)."""
    with deployment.client() as merchant:
        deployment.pay(create(merchant, "REV-OVER"), total_fen=1500)
        view = deployment.wait_status("REV-OVER", "NEEDS_REVIEW")
        assert view["review_reasons"] == ["amount_mismatch"] and view["paid_fen"] == 1500
        body = {"note": "多付 5 元，退回", "action": "refund"}
        deployment.faults(refund_balance_fen=0)
        assert merchant.post("/v1/orders/REV-OVER/review/resolve", json=body).status_code == 409
        deployment.faults(reset=True)
        resolved = merchant.post("/v1/orders/REV-OVER/review/resolve", json=body)
        assert resolved.status_code == 200, resolved.text
        number = resolved.json()["resolution"]["out_refund_no"]
        assert number.endswith("-2")
        assert wait_refund(merchant, number, "SUCCESS")["amount_fen"] == 500
        assert merchant.get("/v1/orders/REV-OVER").json()["refunded_fen"] == 500


def test_a_review_refund_that_closes_later_puts_the_order_back_in_review(deployment: Deployment) -> None:
    duplicate, _ = duplicate_paid(deployment, "REV-CL")
    body = {"note": "重复支付，退回第二笔", "action": "refund", "out_trade_no": duplicate}
    with deployment.client() as merchant:
        deployment.faults(refund_result="CLOSED")
        resolved = merchant.post("/v1/orders/REV-CL/review/resolve", json=body)
        assert resolved.status_code == 200 and resolved.json()["status"] == "PAID", resolved.text  # WeChat took it
        wait_refund(merchant, f"RV{duplicate}", "CLOSED")
        deployment.faults(reset=True)
        back = deployment.wait_status("REV-CL", "NEEDS_REVIEW")
        assert back["review_reasons"] == ["review_refund_failed"]
        why = [e for e in events_of(deployment, "REV-CL") if e["type"] == "NeedsReview"][-1]["data"]
        assert why["out_refund_no"] == f"RV{duplicate}" and "did not go back" in why["detail"]
        again = merchant.post("/v1/orders/REV-CL/review/resolve", json=body)
        assert again.status_code == 200 and again.json()["resolution"]["out_refund_no"] == f"RV{duplicate}-2"
        wait_refund(merchant, f"RV{duplicate}-2", "SUCCESS")
        assert deployment.wait_status("REV-CL", "PAID")["review_reasons"] == []


def test_accepting_keeps_the_money_and_a_different_resolution_after_it_is_refused(deployment: Deployment) -> None:
    wechat = SpecWechat.from_keyset(deployment.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)
    deployment.faults(notifications="drop")
    with deployment.client() as merchant:
        otn = create(merchant, "REV-AMT")
        body = wechat.body(
            "TRANSACTION.SUCCESS", paid_resource(DIRECT.mchid, DIRECT.appid, otn, 990, "4200000000000000000000016601")
        )
        assert (
            httpx.post(
                deployment.ledger + "/wechatpay/v3/notify", content=body, headers=wechat.headers(body)
            ).status_code
            == 204
        )
        deployment.faults(reset=True)
        assert merchant.get("/v1/orders/REV-AMT").json()["review_reasons"] == ["amount_mismatch"]
        # paid less than the order: nothing to give back, a refund resolution says so and changes nothing
        nothing = merchant.post("/v1/orders/REV-AMT/review/resolve", json={"note": "少付", "action": "refund"})
        assert nothing.status_code == 422 and "accept" in nothing.json()["detail"]
        assert (
            merchant.post("/v1/orders/REV-AMT/review/resolve", json={"note": "", "action": "accept"}).status_code == 422
        )
        accept = {"note": "顾客用优惠抵了 10 分，店长同意", "action": "accept"}
        kept = merchant.post("/v1/orders/REV-AMT/review/resolve", json=accept)
        assert kept.status_code == 200 and kept.json()["status"] == "PAID" and kept.json()["refunds"] == []
        assert merchant.post("/v1/orders/REV-AMT/review/resolve", json=accept).status_code == 200  # idempotent
        other = merchant.post("/v1/orders/REV-AMT/review/resolve", json={"note": "改主意", "action": "accept"})
        assert other.status_code == 409
    assert [e["type"] for e in events_of(deployment, "REV-AMT")].count("ReviewResolved") == 1


def test_money_sent_to_review_is_counted_and_alerted_on(deployment: Deployment) -> None:
    """Issue 23, point 9: duplicate payments and amount mismatches have a rate to alert on."""
    duplicate_paid(deployment, "REV-ALERT")
    deadline = time.monotonic() + 10
    while True:
        scraped = httpx.get(f"{deployment.ledger}/metrics").text
        samples = dict(
            line.rsplit(" ", 1) for line in scraped.splitlines() if line.startswith("zhangben_reviews_total{")
        )
        if float(samples.get('zhangben_reviews_total{kind="duplicate"}', 0)) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert float(samples['zhangben_reviews_total{kind="duplicate"}']) >= 1
    assert float(samples['zhangben_reviews_total{kind="needs_review"}']) >= 1
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "ops" / "prometheus-rules.yml").read_text())
    alerts = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    assert "zhangben_reviews_total" in alerts["ZhangbenPaymentsNeedReview"]
    assert 'kind="duplicate"' in alerts["ZhangbenDuplicatePaymentsRising"]


def test_a_refund_names_the_payment_it_gives_back(deployment: Deployment) -> None:
    duplicate, paying = duplicate_paid(deployment, "REV-PAY")
    with deployment.client() as merchant:
        named = merchant.post(
            "/v1/orders/REV-PAY/refunds",
            json={"out_refund_no": "REV-PAY-R1", "amount_fen": 400, "out_trade_no": duplicate},
        )
        assert named.status_code == 202 and named.json()["out_trade_no"] == duplicate
        plain = merchant.post("/v1/orders/REV-PAY/refunds", json={"out_refund_no": "REV-PAY-R2", "amount_fen": 100})
        assert plain.status_code == 202 and plain.json()["out_trade_no"] == paying  # default: the paying one
        too_much = merchant.post(
            "/v1/orders/REV-PAY/refunds",
            json={"out_refund_no": "REV-PAY-R3", "amount_fen": 700, "out_trade_no": duplicate},
        )
        assert too_much.status_code == 409  # 600 left of that payment
        unknown = merchant.post(
            "/v1/orders/REV-PAY/refunds", json={"amount_fen": 1, "out_trade_no": "zb000000000000000000000000001"}
        )
        assert unknown.status_code == 409
        # the review's refund gives back what is left of the duplicate
        resolved = merchant.post("/v1/orders/REV-PAY/review/resolve", json={"note": "退回剩余", "action": "refund"})
        assert resolved.status_code == 200, resolved.text
        by_no = {r["out_refund_no"]: r for r in resolved.json()["refunds"]}
        assert by_no[f"RV{duplicate}"]["amount_fen"] == 600


def test_refused_callbacks_are_each_merchants_own_and_the_shared_path_the_operators(deployment: Deployment) -> None:
    """Issue 23, point 7: a forged callback to merchant A's notify path is A's auditor's to see, never B's; one
    on the shared path names no merchant, and only the deployment's operator sees it."""
    wechat = SpecWechat.from_keyset(deployment.root / "keys", DIRECT.mchid, PUBLIC_KEY_ID)

    def forge(path: str, marker: str) -> int:
        forged = f'{{"id": "{marker}"}}'.encode()
        headers = wechat.headers(forged) | {"Wechatpay-Signature": "Zm9yZ2Vk"}
        return httpx.post(deployment.ledger + path, content=forged, headers=headers).status_code

    assert forge(f"/wechatpay/v3/notify/{DIRECT.mchid}", "forged-for-direct") == 401
    assert forge(f"/wechatpay/v3/notify/{PARTNER.sub_mchid}", "forged-for-partner") == 401
    assert forge("/wechatpay/v3/notify", "forged-on-the-shared-path") == 401
    assert forge("/wechatpay/v3/notify/1234567890", "forged-for-nobody") == 401

    def seen(role: str, **params: str) -> list[str]:
        with deployment.client(role) as reader:
            listed = reader.get("/v1/audit/refused-callbacks", params={"limit": 500} | params)
            assert listed.status_code == 200, listed.text
            return [r["body"] for r in listed.json()["refused"]]

    mine = seen("auditor")
    assert any("forged-for-direct" in b for b in mine)
    assert not any(m in b for b in mine for m in ("partner", "shared-path", "nobody"))  # not A's: invisible
    operator = seen("operator")
    assert all(any(m in b for b in operator) for m in ("direct", "partner", "shared-path", "nobody"))
    with deployment.client("auditor") as auditor:
        found = [
            r
            for r in auditor.get("/v1/audit/refused-callbacks", params={"reason": "signature"}).json()["refused"]
            if "forged-for-direct" in r["body"]
        ]
        assert len(found) == 1 and found[0]["path"] == f"/wechatpay/v3/notify/{DIRECT.mchid}"
        assert found[0]["received_at"].endswith("+08:00")
        assert auditor.get("/v1/audit/refused-callbacks", params={"reason": "no such reason"}).json()["refused"] == []
        later = auditor.get("/v1/audit/refused-callbacks", params={"from": "2100-01-01T00:00:00+08:00"})
        assert later.json()["refused"] == []
        assert auditor.get("/v1/audit/refused-callbacks", params={"from": "2026-01-01T00:00:00"}).status_code == 422
    for role in ("finance", "merchant", "support"):
        with deployment.client(role) as other:
            assert other.get("/v1/audit/refused-callbacks").status_code == 403
    with deployment.client("operator") as operator_client:  # the deployment's key reaches no merchant's orders
        assert operator_client.get("/v1/orders").status_code == 403


def abnormal_refund(deployment: Deployment, no: str) -> str:
    """A paid order whose full refund WeChat reports ABNORMAL (the payer's card refused it)."""
    with deployment.client() as merchant:
        deployment.pay(create(merchant, no))
        deployment.wait_status(no, "PAID")
        deployment.faults(refund_result="ABNORMAL")
        made = merchant.post(f"/v1/orders/{no}/refunds", json={"out_refund_no": f"{no}-R", "amount_fen": 1000})
        assert made.status_code == 202, made.text
        deadline = time.monotonic() + 10
        while merchant.get(f"/v1/refunds/{no}-R").json()["status"] != "ABNORMAL":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        deployment.faults(reset=True)
    return f"{no}-R"


def test_an_abnormal_refund_is_resent_to_the_merchant_bank_card(deployment: Deployment) -> None:
    out_refund_no = abnormal_refund(deployment, "ABN-BANK")
    with deployment.client("support") as support:
        body = {"action": "merchant_bank_card", "note": "顾客的卡已注销，退到商户银行卡后线下转账"}
        assert support.post(f"/v1/refunds/{out_refund_no}/abnormal", json=body).status_code == 403
    with deployment.client() as merchant:
        resent = merchant.post(f"/v1/refunds/{out_refund_no}/abnormal", json=body)
        assert resent.status_code == 200, resent.text
        assert resent.json()["status"] == "PROCESSING" and resent.json()["handling"]["how"] == "merchant_bank_card"
        assert merchant.post(f"/v1/refunds/{out_refund_no}/abnormal", json=body).status_code == 200  # a retry
        deadline = time.monotonic() + 15
        while merchant.get(f"/v1/refunds/{out_refund_no}").json()["status"] != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert deployment.wait_status("ABN-BANK", "REFUNDED")["refunded_fen"] == 1000
    handled = [e for e in events_of(deployment, "ABN-BANK") if e["type"] == "AbnormalHandled"]
    assert len(handled) == 1 and handled[0]["data"]["by"].startswith("merchant ")


def test_an_abnormal_refund_settled_offline_is_done_for_the_order(deployment: Deployment) -> None:
    out_refund_no = abnormal_refund(deployment, "ABN-CASH")
    body = {"action": "settled_offline", "note": "门店现金退还，顾客签字"}
    with deployment.client() as merchant:
        assert (
            merchant.post(
                f"/v1/refunds/{out_refund_no}/abnormal", json={"action": "settled_offline", "note": " "}
            ).status_code
            == 422
        )
        settled = merchant.post(f"/v1/refunds/{out_refund_no}/abnormal", json=body)
        assert settled.status_code == 200, settled.text
        assert settled.json()["status"] == "SUCCESS" and settled.json()["handling"]["note"] == body["note"]
        assert merchant.post(f"/v1/refunds/{out_refund_no}/abnormal", json=body).status_code == 200  # idempotent
        other = merchant.post(
            f"/v1/refunds/{out_refund_no}/abnormal", json={"action": "settled_offline", "note": "再来"}
        )
        assert other.status_code == 409  # it is done
        assert deployment.wait_status("ABN-CASH", "REFUNDED")["refunded_fen"] == 1000
    assert [e["type"] for e in events_of(deployment, "ABN-CASH")].count("AbnormalHandled") == 1
