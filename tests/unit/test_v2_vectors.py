"""API v2's pure functions against the pinned vectors (docs/wechatpay-protocol.md §6, §11 V7 and V8)."""

from __future__ import annotations

import pytest

from adapters.wechatpay import v2_signing
from adapters.wechatpay.errors import SignatureError

KEY = "192006250b4c09247ec02edce69f6a2d"
OFFICIAL = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}
PAY_NOTIFY = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "nonce_str": "5d2b6c2a8db53831f7eda20af46e531c",
    "result_code": "SUCCESS",
    "return_code": "SUCCESS",
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "is_subscribe": "Y",
    "trade_type": "JSAPI",
    "bank_type": "CMC",
    "total_fee": "1",
    "fee_type": "CNY",
    "cash_fee": "1",
    "transaction_id": "1004400740201409030005092168",
    "out_trade_no": "1409811653",
    "time_end": "20140903131540",
}
V8_PLAIN = {
    "out_refund_no": "R2023111500001",
    "out_trade_no": "1217752501201407033233368018",
    "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS",
    "refund_fee": "100",
    "refund_id": "50000000000000000000000000000",
    "refund_recv_accout": "支付用户零钱",
    "refund_request_source": "API",
    "refund_status": "SUCCESS",
    "settlement_refund_fee": "100",
    "settlement_total_fee": "100",
    "success_time": "2023-11-15 06:20:00",
    "total_fee": "100",
    "transaction_id": "4200000000202311130000000001",
}
V8_REQ_INFO = (
    "WBzGpzQuNpcFxIlFjUUD9BfnwwNUlVAs7bwvgHME4/SqYVMUfJvrT2FzXbMDpC95sH8vY/H7M6XsY5trwzYXUsHvZUvbUUNaQhLw8FBk7Qcx5kU"
    "avedL1xvaZWqy6U6r750wdFO94EhjQyGSeNN4R+qXufSyJAU2NMCvTu9liNu/TW2XiSlI8RIQdfeUnA6XFWQYBBziPBdFAtBJ+IuNNNoFamu6XK"
    "q+/Y84S1Y2UbVOftIPfR6XaJbVAgPr2J9NCrAOG+RLmAilsAAoQ2cw0hlUlpr3T6lTJhyzQKHQGhN10RNJehDH7Cc6RlYCm0R3ZiIBG9Iy+PILX"
    "ELbdiY3AeLGWLn4U4m+VVQbsJP7NuLJ5ZyCkM2z79SEEu68CFCw6sSJUGwdaLqtpM5hqFUu2rtCFClaKF9fRw0iXQKxDYWJE1daY8HMrS3bUI4d"
    "LZZYrfyIY8pbozoowQ0UVJP+CS9mffsf3Lj77XMtl8NKHJ3LpA9YYS711jRUjj6Z2JQDC6USRD6HXYYpXOIQGK31nzRfyXQi6JHtHKzQsM7yzhH"
    "Q7rNvyxoS/JGztIZ6fh68zjPWt0AtfahAokPGBzAZauTirl8lnUJqK/+IcT+ILU5QwoyDIeSmDaComiQqDN/wkGctsKuEKI5rz2NRS0SIzr7gHc"
    "kdq54RI5fgYGFUdrx6YeSDYOrqMR0EZm3jxb7TlcEr94qyJA4yAfuyr1vYnzkZzC7jPCppjb34467UnqXwiKl3OLqGjgzPJlBA2Q+VlOuh7EGd/"
    "g6yhGOIHtl8lS6h2iTq46HRor+ji/hl/YaWZJSlDAo50EDnT/Bwzt5+7uE2Z5cdN7mLXQHgX6LvX65s0tfLSnGk/UwObmbwJvR4hWBbzhdK3Jqe"
    "Jp6Qp2j9SMsTQ7B94rtm48reewyaIs9xZtIS6cWgm9pi4HYI5RkezDTGdw62tmPBIUtkUoSne3USSsKGUzWn7tZ2fj5MghCpMgBaPL8+stCMaen"
    "ys5FCHQ2Pn/fHVvlPgAD7KwDyDKT0Sf7UtjOQC98Q/5a8Z+lBrlkMHiq14Dmt/DMtLqI="
)


def test_official_vector_md5_and_hmac() -> None:
    assert v2_signing.sign_string(OFFICIAL, KEY).startswith(
        "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key="
    )
    assert v2_signing.sign(OFFICIAL, KEY, "MD5") == "9A0A8659F005D6984697E2CA0A9CF3B7"
    assert (
        v2_signing.sign(OFFICIAL, KEY, "HMAC-SHA256")
        == "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    )


def test_empty_values_are_dropped_but_zero_is_signed() -> None:
    assert v2_signing.sign(OFFICIAL | {"attach": ""}, KEY) == "9A0A8659F005D6984697E2CA0A9CF3B7"
    assert v2_signing.sign(OFFICIAL | {"coupon_fee": "0"}, KEY) == "9ABAFC70A6D611A538BAD21F2FD8D9A0"


def test_client_side_signatures() -> None:
    mini = {
        "appId": "wxd678efh567hg6787",
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
        "signType": "MD5",
        "timeStamp": "1490840662",
    }
    assert v2_signing.sign(mini, "qazwsxedcrfvtgbyhnujmikolp111111") == "22D9B4E54AB1950F51E0649E8810ACD6"
    jsapi = {
        "appId": "wxd930ea5d5a258f4f",
        "timeStamp": "1414561699",
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx201410272009395522657a690389285100",
        "signType": "MD5",
    }
    assert v2_signing.sign(jsapi, KEY) == "FD19D752A746E5F238A6E53BD99EEBD0"
    app = {
        "appid": "wxd930ea5d5a258f4f",
        "partnerid": "10000100",
        "prepayid": "wx201410272009395522657a690389285100",
        "package": "Sign=WXPay",
        "noncestr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "timestamp": "1414561699",
    }
    assert v2_signing.sign(app, KEY) == "1F88CC0F1B0560FF6D5EED1FBB7AE9C0"


def test_jsapi_pay_params_sign_their_own_sign_type() -> None:
    for sign_type in ("MD5", "HMAC-SHA256"):
        params = v2_signing.jsapi_pay_params("wxd930ea5d5a258f4f", "wx2014", KEY, sign_type)
        assert params["signType"] == sign_type and params["package"] == "prepay_id=wx2014"
        given = params.pop("paySign")
        assert v2_signing.sign(params, KEY, sign_type) == given


def test_pay_notification_vector_checks_and_tampering_does_not() -> None:
    signed = PAY_NOTIFY | {"sign": "B5621D5FF644906CD788D0BF5E2FA69F"}
    v2_signing.check(signed, KEY)
    for change in ({"total_fee": "100"}, {"coupon_fee_0": "1"}, {"sign": "B5621D5FF644906CD788D0BF5E2FA69E"}):
        with pytest.raises(SignatureError):
            v2_signing.check(signed | change, KEY)
    with pytest.raises(SignatureError):
        v2_signing.check(signed, "0" * 32)


def test_a_declared_sign_type_must_be_the_merchants() -> None:
    md5 = v2_signing.signed(OFFICIAL, KEY, "MD5") | {"sign_type": "MD5"}
    md5["sign"] = v2_signing.sign(md5, KEY, "MD5")
    v2_signing.check(md5, KEY, "MD5")
    with pytest.raises(SignatureError, match="merchant uses HMAC-SHA256"):
        v2_signing.check(md5, KEY, "HMAC-SHA256")
    hmac_signed = v2_signing.signed(OFFICIAL, KEY, "HMAC-SHA256")
    assert hmac_signed["sign_type"] == "HMAC-SHA256"
    v2_signing.check(hmac_signed, KEY, "HMAC-SHA256")
    undeclared = dict(OFFICIAL, sign=v2_signing.sign(OFFICIAL, KEY, "HMAC-SHA256"))
    v2_signing.check(undeclared, KEY, "HMAC-SHA256")  # no sign_type: the merchant's type, then MD5
    with pytest.raises(SignatureError, match="unknown sign_type"):
        v2_signing.check(OFFICIAL | {"sign_type": "SHA1", "sign": "X"}, KEY)


def test_req_info_vector_decrypts_and_encrypts_byte_for_byte() -> None:
    assert v2_signing.decrypt_req_info(V8_REQ_INFO, KEY) == V8_PLAIN
    assert v2_signing.encrypt_req_info(V8_PLAIN, KEY) == V8_REQ_INFO
    with pytest.raises(SignatureError):
        v2_signing.decrypt_req_info(V8_REQ_INFO, "f" * 32)
    with pytest.raises(SignatureError):
        v2_signing.decrypt_req_info("not base64!", KEY)


def test_xml_round_trip_keeps_every_value() -> None:
    fields = {"body": "Image形象店]]>-深圳腾大", "total_fee": "0", "attach": "", "a&b": "x"}
    with pytest.raises(ValueError):
        v2_signing.to_xml(fields)
    del fields["a&b"]
    assert v2_signing.parse_xml(v2_signing.to_xml(fields)) == fields


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>',
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b"<xml><a>&lol2;</a></xml>",
        b"<xml><a><b>nested</b></a></xml>",
        b"<root><a>1</a></root>",
        b"not xml at all",
        b"",
        b"\xff\xfe<xml/>",
    ],
    ids=["xxe", "billion-laughs", "nested", "wrong-root", "junk", "empty", "bad-bytes"],
)
def test_hostile_or_malformed_xml_is_refused(body: bytes) -> None:
    with pytest.raises(v2_signing.MalformedXml):
        v2_signing.parse_xml(body)


def test_bizpayurl_is_signed_over_its_five_fields() -> None:
    url = v2_signing.bizpayurl("wx2421b1c4370ec43b", "10000100", "1", KEY, "1415949957", "f6808210402125e3")
    assert url.startswith("weixin://wxpay/bizpayurl?appid=wx2421b1c4370ec43b&mch_id=10000100&product_id=1&")
    fields = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    v2_signing.check(fields, KEY)
