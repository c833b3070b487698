"""The service provider's API (docs/api.md, "Sub-merchants"): its sub-merchants (特约商户), added and changed live.

A key of role ``provider`` names the provider's ``sp_mchid``; it reaches only that provider's sub-merchants (another
provider's are a 404, as if absent).  Each sub-merchant gets API keys of its own (role ``merchant``) for its shop's
systems: the provider's key is never a shop's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from adapters.wechatpay.beijing import beijing_iso
from api.deps import role, runtimes
from application.submerchants import SubMerchants
from domain.apikey import PROVIDER, Principal
from domain.submerchant import SubMerchant

router = APIRouter(prefix="/v1", tags=["provider"])
Provider = Annotated[Principal, Depends(role(PROVIDER))]
Minutes = Annotated[StrictInt, Field(ge=1, le=120)]


class SubApp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    appid: Annotated[StrictStr, Field(pattern=r"^wx[0-9a-f]{16}$", description="a sub_appid: 公众号, 小程序 or app")]
    channels: list[StrictStr] = Field(default_factory=list, description="the channels this app pays for")


class SubMerchantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    apps: list[SubApp] | None = Field(None, description="the sub_appids and the channels each pays for")
    order_ttl_minutes: Minutes | None = Field(None, description="an order's default lifetime (10)")
    qr_ttl_minutes: Minutes | None = Field(None, description="each QR code's lifetime within it (default: all of it)")
    return_url_hosts: list[Annotated[StrictStr, Field(max_length=253)]] | None = Field(
        None, description="the hosts an order's return_url may name"
    )
    notify_url: Annotated[StrictStr, Field(max_length=512)] | None = Field(
        None, description="default: the provider's notify_url with /{sub_mchid} after it"
    )
    active: StrictBool | None = Field(None, description="false: new orders are refused (403); money paths go on")

    def given(self) -> dict[str, Any]:
        """What the body names; ``null`` resets ``qr_ttl_minutes`` and ``notify_url`` to their defaults."""
        resettable = ("qr_ttl_minutes", "notify_url")
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None or k in resettable}


class NewSubMerchant(SubMerchantSettings):
    sub_mchid: Annotated[StrictStr, Field(pattern=r"^[0-9]{8,12}$", description="WeChat's id of the sub-merchant")]


def _desk(request: Request) -> SubMerchants:
    return runtimes(request).shared.sub_merchants


def _view(record: SubMerchant, desk: SubMerchants) -> dict[str, Any]:
    merchant = desk.book.get(record.sub_mchid)
    return {
        **record.state(),
        "notify_url": merchant.notify_url if merchant is not None else record.settings.get("notify_url"),
        "created_at": beijing_iso(record.created_at),
        "changed_at": beijing_iso(record.changed_at),
    }


@router.post("/sub-merchants", status_code=201, summary="Add a sub-merchant (its first API key in the answer)")
def add_sub_merchant(body: NewSubMerchant, who: Provider, request: Request, response: Response) -> dict[str, Any]:
    desk = _desk(request)
    settings = body.given()
    settings.pop("sub_mchid", None)
    record, created = desk.add(who.mchid, body.sub_mchid, settings, who.actor)
    if not created:
        response.status_code = 200  # the same request again: the same record, no new key
        return _view(record, desk)
    return _view(record, desk) | {"api_key": desk.issue_key(who.mchid, record.sub_mchid)}


@router.get("/sub-merchants", summary="The provider's sub-merchants, in the order added")
def list_sub_merchants(who: Provider, request: Request) -> dict[str, Any]:
    desk = _desk(request)
    return {"sub_merchants": [_view(r, desk) for r in desk.list(who.mchid)]}


@router.get("/sub-merchants/{sub_mchid}", summary="One sub-merchant, with its history (who changed what, when)")
def get_sub_merchant(sub_mchid: str, who: Provider, request: Request) -> dict[str, Any]:
    desk = _desk(request)
    record = desk.get(who.mchid, sub_mchid)
    history = [
        {
            "type": type(e).__name__,
            "by": getattr(e, "by", ""),
            "at": beijing_iso(e.at),
            "changes": getattr(e, "changes", None) or getattr(e, "settings", {}),
        }
        for e in desk.history(sub_mchid)
    ]
    return _view(record, desk) | {"history": history}


@router.patch("/sub-merchants/{sub_mchid}", summary="Change settings; active false deactivates")
def change_sub_merchant(sub_mchid: str, body: SubMerchantSettings, who: Provider, request: Request) -> dict[str, Any]:
    desk = _desk(request)
    return _view(desk.change(who.mchid, sub_mchid, body.given(), who.actor), desk)


@router.post("/sub-merchants/{sub_mchid}/api-keys", status_code=201, summary="A new API key for the sub-merchant")
def issue_sub_merchant_key(sub_mchid: str, who: Provider, request: Request) -> dict[str, str]:
    return {"api_key": _desk(request).issue_key(who.mchid, sub_mchid), "role": "merchant", "mchid": sub_mchid}
