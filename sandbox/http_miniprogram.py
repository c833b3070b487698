"""The mini-program login API's face (api.weixin.qq.com): ``/sns/jscode2session``, plain JSON with errcodes.

https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/user-login/code2Session.html
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.service import Sandbox


def routes(sandbox: Sandbox) -> list[Route]:

    async def jscode2session(request: Request) -> Response:
        q = request.query_params
        for name, code in (("appid", 41002), ("secret", 41004), ("js_code", 41008)):
            if not q.get(name):
                return JSONResponse({"errcode": code, "errmsg": f"{name} missing"})
        found = sandbox.config.merchant_for_appid(q["appid"])
        if found is None:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid appid"})
        if found[1] != q["secret"]:
            return JSONResponse({"errcode": 40125, "errmsg": "invalid appsecret"})
        with sandbox.store.transaction():
            login = sandbox.store.get("wxcode", q["js_code"])
            if login is None or login["appid"] != q["appid"]:
                return JSONResponse({"errcode": 40029, "errmsg": "invalid code"})
            if login["used"]:
                return JSONResponse({"errcode": 40163, "errmsg": "code been used"})
            if sandbox.clock.now() > datetime.fromisoformat(login["expires_at"]):
                return JSONResponse({"errcode": 40029, "errmsg": "invalid code (expired)"})
            login["used"] = True
            sandbox.store.put("wxcode", q["js_code"], login)
        return JSONResponse({"openid": login["openid"], "session_key": login["session_key"]})

    return [
        Route("/sns/jscode2session", jscode2session, methods=["GET"]),
    ]
