"""The event feed and webhook endpoints (docs/webhooks.md): business events, pulled or pushed.

``GET /v1/events`` pages through the merchant's business events, oldest
first, with a cursor that is the last event's id (stable across restarts and
projection rebuilds).  Endpoints are the merchant's own; another merchant's
event or endpoint is a 404, exactly as one that does not exist.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from api.deps import Merchant, Rt, await_projection
from api.models import (
    BusinessEventModel,
    CreateWebhookEndpoint,
    DeliveryList,
    EventPage,
    Redelivered,
    RotateSecret,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from application.webhooks import EVENT_TYPES
from bootstrap.wiring import Runtime
from projections.business_events import NAME, seq_of

router = APIRouter(prefix="/v1", tags=["events and webhooks"])


def _seq(text: str, rt: Runtime) -> int:
    """The feed position an event id names in the caller's partition (another partition's id: not found)."""
    seq = seq_of(text, rt.number)
    if seq is None:
        raise HTTPException(404, f"event {text!r} not found")
    return seq


@router.get("/events", response_model=EventPage, summary="The merchant's business events, oldest first")
async def list_events(
    who: Merchant,
    rt: Rt,
    request: Request,
    after: Annotated[str | None, Query(max_length=40, description="the last event id seen")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    type: Annotated[list[str] | None, Query(description=f"any of {', '.join(EVENT_TYPES)}")] = None,  # noqa: A002 — the query parameter's name
) -> dict[str, Any]:
    unknown = sorted(set(type or ()) - set(EVENT_TYPES))
    if unknown:
        raise HTTPException(422, f"unknown event types {unknown}")
    start = _seq(after, rt) if after else 0
    await asyncio.to_thread(await_projection, request, rt, NAME)
    events = await asyncio.to_thread(rt.events.page, who.mchid, start, limit, type or ())
    next_cursor = events[-1].id if events else after
    return {"events": [e.body for e in events], "next_cursor": next_cursor}


@router.get("/events/{event}", response_model=BusinessEventModel, summary="One business event")
def get_event(event: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    found = rt.events.get(who.mchid, _seq(event, rt))
    if found is None:
        raise HTTPException(404, f"event {event!r} not found")
    return found.body


@router.get("/events/{event}/deliveries", response_model=DeliveryList, summary="Every attempt to push this event")
def event_deliveries(event: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    seq = _seq(event, rt)
    if rt.events.get(who.mchid, seq) is None:
        raise HTTPException(404, f"event {event!r} not found")
    return {"deliveries": rt.webhooks.deliveries(who.mchid, seq)}


@router.post("/events/{event}/redeliver", status_code=202, response_model=Redelivered, summary="Push this event again")
def redeliver(event: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    seq = _seq(event, rt)
    if rt.events.get(who.mchid, seq) is None:
        raise HTTPException(404, f"event {event!r} not found")
    return {"queued": rt.webhooks.redeliver(who.mchid, seq)}


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=WebhookEndpointWithSecret,
    summary="Add an endpoint; its signing secret is in this answer only",
)
def create_endpoint(body: CreateWebhookEndpoint, who: Merchant, rt: Rt, request: Request) -> dict[str, Any]:
    await_projection(request, rt, NAME)  # "from now on" means after what has already happened, projected or not
    endpoint = rt.webhooks.create_endpoint(who.mchid, body.url, body.event_types)
    return endpoint.public() | {"secret": endpoint.secret}


@router.get("/webhook-endpoints", response_model=WebhookEndpointList, summary="The merchant's endpoints")
def list_endpoints(who: Merchant, rt: Rt) -> dict[str, Any]:
    return {"endpoints": [e.public() for e in rt.webhooks.endpoints(who.mchid)]}


@router.get("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpoint, summary="One endpoint")
def get_endpoint(endpoint_id: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    return rt.webhooks.endpoint(who.mchid, endpoint_id).public()


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204, summary="Remove an endpoint")
def delete_endpoint(endpoint_id: str, who: Merchant, rt: Rt) -> Response:
    rt.webhooks.delete_endpoint(who.mchid, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=WebhookEndpointWithSecret,
    summary="A new secret (shown once); the old one keeps signing for the grace period",
)
def rotate_secret(endpoint_id: str, who: Merchant, rt: Rt, body: RotateSecret | None = None) -> dict[str, Any]:
    grace = timedelta(seconds=(body or RotateSecret()).grace_seconds)
    endpoint = rt.webhooks.rotate_secret(who.mchid, endpoint_id, grace)
    return endpoint.public() | {"secret": endpoint.secret}
