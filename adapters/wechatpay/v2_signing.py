"""API v2's wire format as pure functions: key/value signatures, XML, the refund notice's ``req_info``.

The signature (https://pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=4_3,
docs/wechatpay-protocol.md §6.1) is taken over the raw key/value map: every
parameter but ``sign``, empty values dropped, keys in ASCII order, joined as
``k=v&…``, then ``&key=API_KEY``; MD5 or HMAC-SHA256 (keyed with the API key)
in uppercase hex.  "Empty" means the empty string only — ``coupon_fee=0``
is signed (the wechatpy pitfall, pinned as vector V7) — and fields nobody
expected (``coupon_id_3``) are signed too, which is why answers and
notifications are kept as plain ``dict[str, str]`` and never as fixed models.

XML is parsed with ``defusedxml`` (no DTDs, no entities: an XXE or a
billion-laughs body is refused before anything is expanded).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlencode

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from adapters.wechatpay.errors import SignatureError, WechatPayError

MD5 = "MD5"
HMAC_SHA256 = "HMAC-SHA256"
SIGN_TYPES = (MD5, HMAC_SHA256)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MalformedXml(WechatPayError):
    """A body that is not WeChat Pay's flat ``<xml>`` of fields (or tries entities, DTDs, nesting)."""


# -- signatures ------------------------------------------------------------------------------


def sign_string(params: Mapping[str, str], key: str) -> str:
    """``k1=v1&k2=v2…&key=KEY`` over every non-empty parameter but ``sign``, keys in ASCII order."""
    pairs = [f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != ""]
    return "&".join([*pairs, f"key={key}"])


def sign(params: Mapping[str, str], key: str, sign_type: str = MD5) -> str:
    message = sign_string(params, key).encode("utf-8")
    if sign_type == MD5:
        return hashlib.md5(message).hexdigest().upper()  # noqa: S324 — WeChat's v2 signature
    if sign_type == HMAC_SHA256:
        return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest().upper()
    raise SignatureError(f"unknown sign_type {sign_type!r} (MD5 or HMAC-SHA256)")


def check(params: Mapping[str, str], key: str, expected_type: str | None = None) -> None:
    """Raise ``SignatureError`` unless ``sign`` is right.

    A message that names its ``sign_type`` is checked with that type, and
    refused if it is not the type the merchant uses (``expected_type``): a
    notification "downgraded" to MD5 is not accepted.  One that names none
    is checked with the merchant's type, then with MD5, WeChat's default.
    """
    given = params.get("sign", "")
    if not given:
        raise SignatureError("v2 message has no sign")
    declared = params.get("sign_type", "")
    if declared:
        if declared not in SIGN_TYPES:
            raise SignatureError(f"unknown sign_type {declared!r}")
        if expected_type is not None and declared != expected_type:
            raise SignatureError(f"signed with {declared}, the merchant uses {expected_type}")
        candidates = [declared]
    else:
        candidates = list(dict.fromkeys([expected_type or MD5, MD5]))
    if not any(hmac.compare_digest(sign(params, key, t), given.upper()) for t in candidates):
        raise SignatureError("v2 sign does not match")


def signed(params: Mapping[str, str], key: str, sign_type: str = MD5) -> dict[str, str]:
    """``params`` with ``sign_type`` (unless MD5 by default) and ``sign`` added."""
    out = dict(params)
    if sign_type != MD5:
        out["sign_type"] = sign_type
    out["sign"] = sign(out, key, sign_type)
    return out


def new_nonce() -> str:
    return secrets.token_hex(16)


# -- XML ---------------------------------------------------------------------------------------


def to_xml(params: Mapping[str, str], root: str = "xml") -> bytes:
    """A flat ``<xml>`` with every value in CDATA, as WeChat writes it."""
    parts = [f"<{root}>"]
    for name, value in params.items():
        if not _FIELD.match(name):
            raise ValueError(f"not an XML field name: {name!r}")
        text = str(value).replace("]]>", "]]]]><![CDATA[>")
        parts.append(f"<{name}><![CDATA[{text}]]></{name}>")
    parts.append(f"</{root}>")
    return "".join(parts).encode("utf-8")


def parse_xml(body: bytes | str, root: str = "xml") -> dict[str, str]:
    """A flat ``<xml>`` into ``{field: text}``; anything else is ``MalformedXml``."""
    try:
        element = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise MalformedXml(f"not WeChat Pay XML: {type(exc).__name__}") from None
    if element.tag != root:
        raise MalformedXml(f"root element is <{element.tag}>, not <{root}>")
    fields: dict[str, str] = {}
    for child in element:
        if len(child):
            raise MalformedXml(f"<{child.tag}> is not a plain field")
        fields[str(child.tag)] = child.text or ""
    return fields


# -- the refund notice's req_info (docs/wechatpay-protocol.md §6.4) -------------------------------------


def _req_info_cipher(api_key: str) -> Cipher[modes.ECB]:
    # The key is the lowercase hex MD5 of the API key: 32 ASCII characters, used as 32 bytes.
    key = hashlib.md5(api_key.encode("utf-8")).hexdigest().encode("ascii")  # noqa: S324 — WeChat's key derivation
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 — WeChat's req_info is AES-256-ECB


def decrypt_req_info(req_info: str, api_key: str) -> dict[str, str]:
    """base64 → AES-256-ECB → PKCS7 → ``<root>`` XML; any failure is a ``SignatureError``."""
    try:
        data = base64.b64decode(req_info, validate=True)
        decryptor = _req_info_cipher(api_key).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise SignatureError("req_info does not decrypt with this merchant's API key") from None
    return parse_xml(plaintext, root="root")


def encrypt_req_info(fields: Mapping[str, str], api_key: str) -> str:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(to_xml(fields, root="root")) + padder.finalize()
    encryptor = _req_info_cipher(api_key).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


# -- what the payer's side signs (docs/wechatpay-protocol.md §5, "APIv2 equivalents") ---------------------


def jsapi_pay_params(appid: str, prepay_id: str, key: str, sign_type: str) -> dict[str, str]:
    """``WeixinJSBridge`` / ``wx.requestPayment`` parameters; here ``signType`` is signed too."""
    params = {
        "appId": appid,
        "timeStamp": str(int(time.time())),
        "nonceStr": new_nonce(),
        "package": f"prepay_id={prepay_id}",
        "signType": sign_type,
    }
    params["paySign"] = sign(params, key, sign_type)
    return params


def app_pay_params(appid: str, partnerid: str, prepay_id: str, key: str, sign_type: str) -> dict[str, str]:
    params = {
        "appid": appid,
        "partnerid": partnerid,
        "prepayid": prepay_id,
        "package": "Sign=WXPay",
        "noncestr": new_nonce(),
        "timestamp": str(int(time.time())),
    }
    params["sign"] = sign(params, key, sign_type)
    return params


def bizpayurl(
    appid: str, mch_id: str, product_id: str, key: str, time_stamp: str, nonce_str: str, sub_mch_id: str = ""
) -> str:
    """Native mode 1's printed product code (https://pay.weixin.qq.com/wiki/doc/api/native.php?chapter=6_4).

    A service provider's code also names the sub-merchant (``sub_mch_id``, signed with the rest).
    """
    params = {
        "appid": appid,
        "mch_id": mch_id,
        "product_id": product_id,
        "time_stamp": time_stamp,
        "nonce_str": nonce_str,
    }
    if sub_mch_id:
        params["sub_mch_id"] = sub_mch_id
    return "weixin://wxpay/bizpayurl?" + urlencode(params | {"sign": sign(params, key, MD5)})
