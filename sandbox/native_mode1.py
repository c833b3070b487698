"""Native mode 1 as WeChat plays it when a payer scans a printed product code.

https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=6_4: WeChat checks
the code's signature, POSTs ``appid, openid, mch_id, is_subscribe,
nonce_str, product_id, sign`` to the 扫码回调URL set in the merchant
platform, checks the signed answer, and shows the payer the prepay it names.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from adapters.wechatpay import v2_signing
from adapters.wechatpay.errors import SignatureError
from sandbox.errors import WechatError, param_error
from sandbox.service import Sandbox

PREFIX = "weixin://wxpay/bizpayurl?"
CODE_FIELDS = ("appid", "mch_id", "product_id", "time_stamp", "nonce_str", "sign")


def scan(sandbox: Sandbox, code_url: str, openid: str) -> dict[str, Any]:
    """The scan: the product code checked, the merchant asked, its answer checked; returns what it said."""
    if not code_url.startswith(PREFIX):
        raise param_error("code_url", "not a product code (weixin://wxpay/bizpayurl?…)", code_url)
    code = dict(parse_qsl(urlsplit(code_url).query))
    missing = [f for f in CODE_FIELDS if not code.get(f)]
    if missing:
        raise param_error("code_url", f"the product code lacks {', '.join(missing)}")
    merchant = sandbox.config.merchants.get(code["mch_id"])
    if merchant is None or not merchant.v2_key or code["appid"] not in merchant.appids:
        raise WechatError(400, "MCHID_NOT_EXIST", "二维码中的商户号或appid不存在")
    try:
        v2_signing.check(code, merchant.v2_key)
    except SignatureError:
        raise WechatError(400, "SIGNERROR", "二维码签名错误") from None
    if not merchant.native_callback_url:
        raise WechatError(409, "NOT_CONFIGURED", "商户未在商户平台配置扫码回调URL (native_callback_url)")
    request = {
        "appid": code["appid"],
        "openid": openid,
        "mch_id": merchant.mchid,
        "is_subscribe": "N",
        "nonce_str": v2_signing.new_nonce(),
        "product_id": code["product_id"],
    }
    if code.get("sub_mch_id"):  # a service provider's code names its sub-merchant
        if code["sub_mch_id"] not in merchant.sub_merchants:
            raise WechatError(400, "MCHID_NOT_EXIST", "二维码中的子商户号不存在")
        request["sub_mch_id"] = code["sub_mch_id"]
    body = v2_signing.to_xml(v2_signing.signed(request, merchant.v2_key))
    try:
        response = httpx.post(
            merchant.native_callback_url, content=body, headers={"Content-Type": "text/xml"}, timeout=5.0
        )
        answer = v2_signing.parse_xml(response.content)
    except (httpx.HTTPError, v2_signing.MalformedXml) as exc:
        raise WechatError(502, "CALLBACK_FAILED", f"扫码回调失败: {type(exc).__name__}") from None
    if answer.get("return_code") != "SUCCESS":
        return {"accepted": False, "answer": answer}
    try:
        v2_signing.check(answer, merchant.v2_key)
    except SignatureError:
        raise WechatError(502, "CALLBACK_SIGN_ERROR", "商户的扫码回调应答签名错误") from None
    if answer.get("result_code") != "SUCCESS" or not answer.get("prepay_id"):
        return {"accepted": False, "answer": answer}
    txn = sandbox.transactions.find_for_payer(None, None, answer["prepay_id"])
    if (
        txn["mchid"] != merchant.mchid
        or txn["sub_mchid"] != code.get("sub_mch_id", "")
        or txn.get("product_id") != code["product_id"]
    ):
        raise WechatError(502, "PREPAY_MISMATCH", "应答的prepay_id不是该商户为该商品下的单")
    return {"accepted": True, "answer": answer, "txn_key": txn["key"], "out_trade_no": txn["out_trade_no"]}
