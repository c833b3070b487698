"""What every route needs: the process's runtime, and who is calling (``Authorization: Bearer``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bootstrap.wiring import Runtime, Runtimes
from domain.apikey import Principal

# Shown in /openapi.json as the "bearer" security scheme; the 401 below is ours, not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="an API key from `zhangben apikey create`")


def runtime(request: Request) -> Runtime:
    """The first partition's runtime: the process's settings and clients, and what names no merchant (looked up
    each time: ``zhangben partitions move`` may have reopened it on another cell)."""
    rt: Runtime = request.app.state.runtime.fleet.home
    return rt


def runtimes(request: Request) -> Runtimes:
    """Every partition's runtime, and the way to a merchant's (``Runtimes.at``)."""
    return runtime(request).fleet


def await_projection(request: Request, rt: Runtime, name: str) -> None:
    """Read-after-write: a read model shows every command that finished before it was asked for.

    The wait is where the view is read, not on the commands' hot path; it is
    brief (the projections follow the log within tens of milliseconds).
    """
    if getattr(request.app.state, "projection_running", False):
        follower = rt.followers[name]
        follower.wait_for(follower.log.head(), timeout=1.0)


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The key's holder, read on the event loop (``ApiKeys.authenticate_async``): no thread hop before the route."""
    keys = runtimes(request).keys  # keys are the directory's: a key names its merchant, and so its partition
    found = await keys.authenticate_async(credentials.credentials.strip()) if credentials else None
    if found is None:
        raise HTTPException(
            401, "a valid API key is required: Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"}
        )
    request.state.principal = found
    return found


def role(*allowed: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:  # no I/O: no thread hop
        if who.role not in allowed:
            raise HTTPException(403, f"this API key's role ({who.role}) may not do this; needs {' or '.join(allowed)}")
        return who

    return check


async def caller_partition(request: Request, who: Annotated[Principal, Depends(principal)]) -> Runtime:
    """The runtime of the caller's merchant's partition (no I/O once its placement is known: no thread hop)."""
    fleet = runtimes(request)
    if len(fleet.partitions) == 1 or not who.mchid or who.mchid in fleet.placed:
        return fleet.at(who.mchid)
    return await asyncio.to_thread(fleet.at, who.mchid)  # its first request here: read from the directory


# The runtime a route works in: its caller's partition (every route that takes it also takes its caller's key)
Rt = Annotated[Runtime, Depends(caller_partition)]


# The caller of a route only a merchant's own key may use (orders, refunds, products, events, webhooks)
Merchant = Annotated[Principal, Depends(role("merchant"))]
