"""WeChat's web authorisation for 公众号 pages, as the sandbox plays it (snsapi_base).

- ``GET /connect/oauth2/authorize`` (open.weixin.qq.com): the payer's browser
  arrives; WeChat sends it back to ``redirect_uri`` with ``code`` and ``state``.
  The sandbox's payer is ``openid`` in the query, else one made for the appid.
- ``GET /sns/oauth2/access_token`` (api.weixin.qq.com): the code, the appid and
  its appsecret → ``openid`` (and an access token nobody needs for payments).
  Codes are single use and live five minutes, with WeChat's errcodes.
- ``POST /sandbox/wx-oauth`` ``{"appid", "openid"?}``: a code, as if the payer
  had come back from the authorize page (for tests and scripts without a browser).

https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_webpage_authorization.html
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.clock import rfc3339
from sandbox.service import Sandbox

KIND = "oauthcode"


def issue_code(sandbox: Sandbox, appid: str, openid: str | None) -> str:
    code = secrets.token_urlsafe(24)
    sandbox.store.put(
        KIND,
        code,
        {
            "appid": appid,
            "openid": openid or "o" + hashlib.sha256(f"oa{appid}{secrets.token_hex(4)}".encode()).hexdigest()[:27],
            "expires_at": rfc3339(sandbox.clock.now() + timedelta(minutes=5)),
            "used": False,
        },
    )
    return code


def routes(sandbox: Sandbox) -> list[Route]:
    async def authorize(request: Request) -> Response:
        q = request.query_params
        if sandbox.config.merchant_for_appid(q.get("appid", "")) is None:
            return PlainTextResponse("Scope 参数错误或没有 Scope 权限 (unknown appid)", status_code=400)
        redirect = urlsplit(q.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.hostname:
            return PlainTextResponse("redirect_uri 参数错误", status_code=400)
        if q.get("response_type") != "code" or q.get("scope") not in ("snsapi_base", "snsapi_userinfo"):
            return PlainTextResponse("Scope 参数错误或没有 Scope 权限", status_code=400)
        code = issue_code(sandbox, q["appid"], q.get("openid"))
        query = "&".join(p for p in (redirect.query, urlencode({"code": code, "state": q.get("state", "")})) if p)
        return RedirectResponse(urlunsplit(redirect._replace(query=query)), status_code=302)

    async def access_token(request: Request) -> Response:
        q = request.query_params
        for name, errcode in (("appid", 41002), ("secret", 41004), ("code", 41008)):
            if not q.get(name):
                return JSONResponse({"errcode": errcode, "errmsg": f"{name} missing"})
        found = sandbox.config.merchant_for_appid(q["appid"])
        if found is None:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid appid"})
        if found[1] != q["secret"]:
            return JSONResponse({"errcode": 40125, "errmsg": "invalid appsecret"})
        if q.get("grant_type") != "authorization_code":
            return JSONResponse({"errcode": 40002, "errmsg": "invalid grant_type"})
        with sandbox.store.transaction():
            grant = sandbox.store.get(KIND, q["code"])
            if grant is None or grant["appid"] != q["appid"]:
                return JSONResponse({"errcode": 40029, "errmsg": "invalid code"})
            if grant["used"]:
                return JSONResponse({"errcode": 40163, "errmsg": "code been used"})
            if sandbox.clock.now() > datetime.fromisoformat(grant["expires_at"]):
                return JSONResponse({"errcode": 40029, "errmsg": "invalid code (expired)"})
            grant["used"] = True
            sandbox.store.put(KIND, q["code"], grant)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(32),
                "expires_in": 7200,
                "refresh_token": secrets.token_urlsafe(32),
                "openid": grant["openid"],
                "scope": "snsapi_base",
            }
        )

    async def wx_oauth(request: Request) -> Response:
        try:
            data: Any = json.loads(await request.body() or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return JSONResponse({"code": "PARAM_ERROR", "message": "body must be a JSON object"}, status_code=400)
        appid = str(data.get("appid", ""))
        if sandbox.config.merchant_for_appid(appid) is None:
            return JSONResponse({"code": "PARAM_ERROR", "message": f"unknown appid {appid!r}"}, status_code=400)
        return JSONResponse({"code": issue_code(sandbox, appid, data.get("openid"))})

    return [
        Route("/connect/oauth2/authorize", authorize, methods=["GET"]),
        Route("/sns/oauth2/access_token", access_token, methods=["GET"]),
        Route("/sandbox/wx-oauth", wx_oauth, methods=["POST"]),
    ]
