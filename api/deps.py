"""What every route needs: the process's runtime, and who is calling."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request

from zhangben.apikeys import Principal, authenticate
from zhangben.wiring import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    rt: Runtime = request.app.state.runtime
    found = authenticate(rt.ledger.repository.get, key.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise HTTPException(401, "a valid API key is required: Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = found
    return found


def role(*allowed: str) -> Callable[[Principal], Principal]:
    def check(who: Principal = Depends(principal)) -> Principal:
        if who.role not in allowed:
            raise HTTPException(403, f"this API key's role ({who.role}) may not do this; needs {' or '.join(allowed)}")
        return who

    return check
