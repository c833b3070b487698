"""The mini-program login API (``api.weixin.qq.com``): ``wx.login``'s code → the payer's openid.

``GET /sns/jscode2session`` answers plain JSON with an ``errcode`` on failure
(docs/wechatpay-protocol.md §7).  The session key is WeChat's secret for this
session: it is returned to the ledger only, never shown in ``repr`` or a log.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.wechatpay.errors import WechatPayBusinessError, WechatPayUnavailable

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
BUSY = (-1, 45011)  # WeChat is busy, or this appid asks too often: try again


@dataclass(frozen=True)
class MiniProgramSession:
    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


def sns_get(http: httpx.Client, url: str, params: dict[str, str], what: str, again: str) -> dict[str, Any]:
    """A GET to one of WeChat's ``/sns`` APIs, which answer JSON with an ``errcode`` on failure.

    Unreachable or busy is ``WechatPayUnavailable`` (try again); a refused code
    is a business error whose message says what to do (``again``).  The answer
    has an ``openid`` whenever this returns.
    """
    try:
        answer = http.get(url, params=params).json()
    except (httpx.HTTPError, ValueError):
        raise WechatPayUnavailable(f"{what} is unreachable; try again") from None
    if not isinstance(answer, dict):
        raise WechatPayUnavailable(f"{what} answered something that is not JSON; try again")
    errcode = int(answer.get("errcode") or 0)
    if errcode in BUSY:
        raise WechatPayUnavailable(f"{what} is busy ({errcode}); try again", code=str(errcode))
    if errcode or not answer.get("openid"):
        raise WechatPayBusinessError(
            f"WeChat refused the code ({errcode} {answer.get('errmsg', '')}): {again}", code=str(errcode)
        )
    return answer


def code_to_session(http: httpx.Client, base_url: str, appid: str, secret: str, code: str) -> MiniProgramSession:
    """Exchange a ``wx.login`` code; a busy WeChat is ``WechatPayUnavailable``, a refused code a business error."""
    answer = sns_get(
        http,
        f"{base_url}/sns/jscode2session",
        {"appid": appid, "secret": secret, "js_code": code, "grant_type": "authorization_code"},
        "WeChat login",
        "ask wx.login again",
    )
    return MiniProgramSession(str(answer["openid"]), answer.get("unionid") or None, str(answer.get("session_key", "")))


class EncryptedDataError(ValueError):
    """``encryptedData`` that the session key does not open, or whose watermark names another app."""


def decrypt_data(session_key: str, encrypted_data: str, iv: str, appid: str) -> dict[str, Any]:
    """A mini-program's ``encryptedData`` (a phone number, WeRun steps, shared user data), opened with the payer's
    session key: AES-128-CBC, the key and IV base64, PKCS#7 padding; the JSON inside carries a ``watermark`` whose
    ``appid`` must be this app's — data encrypted for another app is refused
    (https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/signature.html).
    """
    try:
        key, vector, data = base64.b64decode(session_key), base64.b64decode(iv), base64.b64decode(encrypted_data)
    except (ValueError, binascii.Error):
        raise EncryptedDataError("encrypted_data, iv and the session key must be base64") from None
    if len(key) != 16 or len(vector) != 16 or not data or len(data) % 16:
        raise EncryptedDataError("encrypted_data is not AES-128-CBC under this session (16-byte key, IV and blocks)")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(vector)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()
        opened = json.loads(plain)
    except (ValueError, UnicodeDecodeError):
        raise EncryptedDataError(
            "encrypted_data does not open with the payer's current session key: log in again (wx.login)"
        ) from None
    watermark = opened.get("watermark") if isinstance(opened, dict) else None
    if not isinstance(watermark, dict) or watermark.get("appid") != appid:
        raise EncryptedDataError(f"encrypted_data's watermark does not name this mini-program ({appid})")
    return dict(opened)
