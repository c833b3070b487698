"""Web authorisation for 公众号 pages (snsapi_base): the payer's openid for JSAPI payments.

The page sends the payer's browser to ``open.weixin.qq.com/connect/oauth2/authorize``;
WeChat comes back to ``redirect_uri`` (a page under the 公众号's 网页授权域名) with
``code`` and ``state``; the back end exchanges the code at
``api.weixin.qq.com/sns/oauth2/access_token`` with the appsecret.  ``snsapi_base``
asks the payer nothing and yields the openid only, which is all a payment needs.
https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_webpage_authorization.html
"""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit

import httpx

from adapters.wechatpay.miniprogram import sns_get

DEFAULT_OPEN_BASE_URL = "https://open.weixin.qq.com"


def authorize_url(open_base_url: str, appid: str, redirect_uri: str, state: str) -> str:
    """The URL to send the payer's browser to; the parameters in WeChat's order, then ``#wechat_redirect``."""
    query = urlencode(
        {
            "appid": appid,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": "snsapi_base",
            "state": state,
        },
        quote_via=quote,
    )
    return f"{open_base_url.rstrip('/')}/connect/oauth2/authorize?{query}#wechat_redirect"


def check_redirect_uri(redirect_uri: str) -> bool:
    """An absolute http(s) URL without a fragment: what WeChat accepts as ``redirect_uri``."""
    parts = urlsplit(redirect_uri)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def code_to_openid(http: httpx.Client, base_url: str, appid: str, secret: str, code: str) -> str:
    """``/sns/oauth2/access_token``: the code (single use, 5 minutes) → the payer's openid for this appid.

    The answer's access token is for reading the user's profile (snsapi_userinfo);
    a payment needs none of it, so it is dropped here and never stored or logged.
    """
    answer = sns_get(
        http,
        f"{base_url}/sns/oauth2/access_token",
        {"appid": appid, "secret": secret, "code": code, "grant_type": "authorization_code"},
        "WeChat web authorisation",
        "send the payer through authorize-url again",
    )
    return str(answer["openid"])
