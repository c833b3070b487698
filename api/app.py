"""The FastAPI application: ``create_app()`` builds one per worker process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from adapters.persistence import parse_url, ping
from api import audit, callbacks, cashier, console, errors, events, finance, logs, merchant, ops, products, providers
from api.admission import Admission
from api.db_gate import DatabaseGates
from api.observe import Observe
from bootstrap.placement_watch import watch_moves
from bootstrap.settings import load_settings
from bootstrap.wiring import RETIRE_SECONDS, Runtime, Runtimes, build_runtimes

DOCS_ASSETS = "/docs/assets"


def create_app(rt: Runtime | None = None, *, projection_running: bool | None = None) -> FastAPI:
    """The app; without ``rt`` it builds its runtime from the settings when it starts."""
    if projection_running is None:
        projection_running = os.environ.get("ZHANGBEN_PROJECTIONS_RUNNING", "1") == "1"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = rt is None
        if owned:  # a worker of `serve --workers N` is a process of its own, spawned with no logging set up
            logs.configure()
        app.state.runtime = rt or build_runtimes(load_settings()).home  # every partition's, routed by merchant
        app.state.metrics = ops.Metrics(app.state.runtime)
        fleet = app.state.runtime.fleet
        cells = fleet.settings.cell_names()
        loop = asyncio.get_running_loop()
        app.state.db_gate = DatabaseGates(
            {cell: partial(_probe, fleet, cell) for cell in cells},
            backs={cell: partial(_fresh_connections, fleet, cell, loop) for cell in cells},
        )
        fleet.cell_open = app.state.db_gate.cell_open  # a merchant on a closed cell: 503 at once
        fleet.keys.available = lambda: app.state.db_gate.cell_open(cells[0])  # the directory's cell
        app.state.projection_running = projection_running
        fleet.moved.append(lambda partition, old: _retire_async(old, loop))
        stop_watching = watch_moves(fleet)  # `zhangben partitions move`: frozen partitions 503, moved ones reopened
        yield
        stop_watching()
        fleet = app.state.runtime.fleet
        for ledger in [*(rt.ledger for rt in fleet.partitions), fleet.shared.keys_ledger]:
            if ledger.async_store is not None:  # its connections belong to this event loop
                await ledger.async_store.close()
        if owned:
            app.state.runtime.close()

    # /docs and /redoc from assets in a maintained wheel (fastapi-offline), not a CDN: they work on an
    # isolated machine and in mainland China, and load no Google fonts
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="zhangben",
        version="0.1.0",
        lifespan=lifespan,
        description="An event-sourced payment ledger for WeChat Pay. Money is always integer fen.",
    )
    errors.install(app)
    # routes are matched in order, one after another: WeChat's callbacks (their own /wechatpay/ prefix) first,
    # then the merchant API — the hot paths of a peak do not walk the other routers' patterns first
    routers = (callbacks, merchant, cashier, products, providers, events, audit, finance, ops, console)
    for module in routers[:-1]:
        app.include_router(module.router)
    console.install(app)

    # inside Observe: what is shed is logged and counted like any answer, by the route it was for
    app.add_middleware(Admission, routes=[route for module in routers for route in module.router.routes])
    app.add_middleware(Observe, probe_store=_probe_store)
    return app


def _probe_store(rt: Runtime) -> None:
    """Every cell answers on a fresh connection (a slow request's check: which cell it was for is not known)."""
    for cell in rt.fleet.settings.cell_names():
        _probe(rt.fleet, cell)


def _retire_async(old: Runtime, loop: asyncio.AbstractEventLoop) -> None:
    """A moved partition's old event loop store closed on its loop, once requests under way on it are done."""
    store = old.ledger.async_store
    if store is not None:

        async def retire() -> None:
            await asyncio.sleep(RETIRE_SECONDS)
            await store.close()

        asyncio.run_coroutine_threadsafe(retire(), loop)


def _probe(fleet: Runtimes, cell: str) -> None:
    """A cell is back when a fresh connection to its primary answers (each node tried in turn, each within its
    connect timeout: a frozen old primary is passed over).  Nothing pooled is used: a connection to a frozen
    server never fails, it waits (its kernel still acknowledges), and the probe must not wait with it."""
    ping(parse_url(fleet.settings.database_of(cell)))


def _fresh_connections(fleet: Runtimes, cell: str, loop: asyncio.AbstractEventLoop) -> None:
    """Every pool of the cell's partitions (and of the directory, on the first cell) replaces its connections
    before the gate opens: after a restart they are dead, after a failover they lead to the old primary."""
    ledgers = [rt.ledger for rt in fleet.cells().get(cell, [])]
    if cell == fleet.settings.cell_names()[0]:
        ledgers.append(fleet.shared.keys_ledger)
    for ledger in ledgers:
        pool = getattr(getattr(ledger.recorder, "datastore", None), "pool", None)
        drain = getattr(pool, "drain", None)  # psycopg_pool's; SQLite's pool has none
        if callable(drain):
            drain()
        if ledger.async_store is not None:
            asyncio.run_coroutine_threadsafe(ledger.async_store.drain(), loop).result(timeout=5)
