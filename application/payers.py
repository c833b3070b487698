"""The payer's identity: the openid a JSAPI or mini-program payment needs, from WeChat's login and OAuth.

A mini-program's ``wx.login`` code becomes the openid through ``jscode2session``
(https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/user-login/code2Session.html);
an official-account page gets it by web authorisation, ``snsapi_base``
(https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_webpage_authorization.html).
Both need the app's appsecret; the session key WeChat returns is kept
server-side, sealed, never answered.
"""

from __future__ import annotations

from typing import Any

from adapters.sessions import SessionKeys
from adapters.wechatpay import oauth
from adapters.wechatpay.config import Merchant
from adapters.wechatpay.miniprogram import (
    DEFAULT_BASE_URL,
    EncryptedDataError,
    MiniProgramSession,
    code_to_session,
    decrypt_data,
)
from application.payments import PaymentService
from domain.errors import Conflict, InvalidInput


class Payers:
    """Who is paying, as WeChat names them to the merchant's app."""

    def __init__(
        self,
        payments: PaymentService,
        login_base_url: str = DEFAULT_BASE_URL,
        open_base_url: str = oauth.DEFAULT_OPEN_BASE_URL,
        session_keys: SessionKeys | None = None,
    ) -> None:
        self.payments = payments  # the merchants and their apps
        self.login_base_url = login_base_url  # the mini-program login API's host (api.weixin.qq.com)
        self.open_base_url = open_base_url  # WeChat's web authorisation page (open.weixin.qq.com)
        self.session_keys = session_keys

    def miniprogram_login(self, mchid: str, code: str, appid: str | None = None) -> MiniProgramSession:
        """``wx.login``'s code → the payer's openid, with the mini-program's appid and appsecret.

        The session key WeChat returns is kept server-side (``SessionKeys``),
        shared by the workers and kept across restarts; it is never answered.
        """
        app = self._app_with_secret(mchid, "miniprogram", appid, "mini-program login")
        session = code_to_session(
            self.payments.client.http, self.login_base_url, app.payer_appid, app.appsecret or "", code
        )
        if self.session_keys is not None:
            self.session_keys.keep(app.payer_appid, session.openid, session.session_key, self.payments.ledger.clock())
        return session

    def miniprogram_decrypt(
        self, mchid: str, openid: str, encrypted_data: str, iv: str, appid: str | None = None
    ) -> dict[str, Any]:
        """``encryptedData`` from the mini-program, opened with the payer's session key kept at login; its
        watermark must name the mini-program.  No session (never logged in here, or the key rotated by a newer
        ``wx.login`` on the payer's side) is a 409 that says to log in again."""
        merchant = self.payments.merchant(mchid)
        app = merchant.with_app(self.payments.app_for(merchant, "miniprogram", appid))
        session_key = self.session_keys.get(app.payer_appid, openid) if self.session_keys is not None else None
        if session_key is None:
            raise Conflict(f"no session for {openid} in {app.payer_appid}: log in first (/v1/wechat/miniprogram/login)")
        try:
            return decrypt_data(session_key, encrypted_data, iv, app.payer_appid)
        except EncryptedDataError as exc:
            raise InvalidInput("encrypted_data", str(exc)) from None

    def oauth_authorize_url(self, mchid: str, redirect_uri: str, state: str, appid: str | None = None) -> str:
        """Where a 公众号 page sends the payer's browser for ``snsapi_base`` (the openid, asking nothing)."""
        if not oauth.check_redirect_uri(redirect_uri):
            raise InvalidInput("redirect_uri", "redirect_uri must be an absolute http(s) URL without a fragment")
        app = self.payments.merchant(mchid).with_app(
            self.payments.app_for(self.payments.merchant(mchid), "jsapi", appid)
        )
        return oauth.authorize_url(self.open_base_url, app.payer_appid, redirect_uri, state)

    def oauth_openid(self, mchid: str, code: str, appid: str | None = None) -> tuple[str, str]:
        """The code WeChat sent back to the redirect_uri → (openid, appid): the payer's id in the 公众号."""
        app = self._app_with_secret(mchid, "jsapi", appid, "web authorisation")
        openid = oauth.code_to_openid(
            self.payments.client.http, self.login_base_url, app.payer_appid, app.appsecret or "", code
        )
        return openid, app.payer_appid

    def _app_with_secret(self, mchid: str, channel: str, appid: str | None, what: str) -> Merchant:
        merchant = self.payments.merchant(mchid)
        app = merchant.with_app(self.payments.app_for(merchant, channel, appid))
        if not app.appsecret:
            raise Conflict(
                f"no appsecret_file is configured for app {app.payer_appid} of merchant {mchid}: {what} needs it"
            )
        return app
