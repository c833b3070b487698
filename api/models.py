"""The HTTP API's shapes: what each route accepts and what it answers, for ``/openapi.json``.

Lengths, ranges and patterns come from ``domain.limits`` (written once);
money is always an integer number of fen.  The order, payment and refund
answers are the views of ``application.views`` themselves (typed dicts).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    model_serializer,
)
from typing_extensions import TypedDict

from application.views import OrderView
from domain import checkout, limits
from domain.checkout import LineItem
from domain.money import MAX_FEN
from domain.requests import NewAttempt, NewOrder, NewRefund, OrderTerms
from domain.status import Channel

Key = Annotated[
    str, Field(min_length=limits.KEY_MIN_CHARS, max_length=limits.KEY_MAX_CHARS, pattern=limits.KEY_PATTERN)
]
Fen = Annotated[StrictInt, Field(gt=0, le=MAX_FEN, description="integer number of fen (分)")]
OpenId = Annotated[StrictStr, Field(min_length=1, max_length=limits.OPENID_MAX_CHARS)]
AppId = Annotated[StrictStr, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_]+$")]


# -- requests ------------------------------------------------------------------------------


class LineItemBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(min_length=1, max_length=checkout.ITEM_NAME_MAX_CHARS)]
    quantity: Annotated[StrictInt, Field(ge=1, le=checkout.ITEM_QUANTITY_MAX)]
    unit_price_fen: Annotated[StrictInt, Field(ge=0, le=MAX_FEN, description="integer number of fen (分)")]


class CreateOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merchant_order_no: Key
    amount_fen: Fen
    # Characters here, bytes in the ledger: a description of 127 characters may still be too long for WeChat.
    description: Annotated[StrictStr, Field(min_length=1, max_length=limits.DESCRIPTION_MAX_BYTES)]
    channel: Channel
    payer_openid: OpenId | None = None
    expire_seconds: Annotated[StrictInt, Field(ge=limits.EXPIRE_SECONDS_MIN, le=limits.EXPIRE_SECONDS_MAX)] | None = (
        Field(None, description="the order's lifetime; default: the merchant's order_ttl_minutes (10 minutes)")
    )
    attach: Annotated[StrictStr, Field(max_length=limits.ATTACH_MAX_BYTES)] | None = None
    user_id: Annotated[StrictStr, Field(min_length=1, max_length=checkout.USER_ID_MAX_CHARS)] | None = Field(
        None, description="the shop's own id of the buyer"
    )
    items: Annotated[list[LineItemBody], Field(max_length=checkout.ITEMS_MAX)] | None = Field(
        None, description="what is sold; quantity × unit_price_fen summed over the items must equal amount_fen"
    )
    return_url: Annotated[StrictStr, Field(min_length=9, max_length=checkout.RETURN_URL_MAX_CHARS)] | None = Field(
        None,
        description="https; its host one of the merchant's return_url_hosts: where the cashier page sends the payer "
        "once paid, with the order number and a signature (docs/api.md)",
    )
    currency: Literal["CNY"] = "CNY"
    meta: dict[str, Any] | None = Field(
        None, description=f"the shop's own JSON, at most {checkout.META_MAX_BYTES} bytes"
    )
    appid: AppId | None = Field(None, description="one of the merchant's apps; default: the app claiming the channel")
    payer_client_ip: IPvAnyAddress | None = Field(
        None, description="the payer's IP as your back end saw it (H5 needs it); default: from trusted proxies"
    )

    def request(
        self,
        mchid: str,
        client_ip: str,
        idempotency_key: str | None,
        expire_seconds: int = limits.EXPIRE_SECONDS_DEFAULT,
    ) -> NewOrder:
        """The request as the ledger takes it, whole (``domain.requests.NewOrder``); ``expire_seconds`` is the
        merchant's default lifetime, for a body that names none."""
        terms = OrderTerms(
            self.amount_fen,
            self.description,
            str(self.channel),
            self.payer_openid,
            self.expire_seconds if self.expire_seconds is not None else expire_seconds,
            self.attach,
            self.user_id,
            tuple(LineItem(i.name, i.quantity, i.unit_price_fen) for i in self.items or ()),
            self.return_url,
            self.currency,
            checkout.meta_text(self.meta),
        )
        return NewOrder(mchid, self.merchant_order_no, terms, idempotency_key, self.appid, client_ip)


class NewPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel | None = None
    payer_openid: OpenId | None = None
    appid: AppId | None = None
    payer_client_ip: IPvAnyAddress | None = None

    def request(self, mchid: str, merchant_order_no: str, client_ip: str) -> NewAttempt:
        """The request as the ledger takes it, whole (``domain.requests.NewAttempt``)."""
        channel = str(self.channel) if self.channel else None
        return NewAttempt(mchid, merchant_order_no, channel, self.payer_openid, self.appid, client_ip)


class CreateRefund(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_refund_no: Key | None = None
    amount_fen: Fen
    reason: Annotated[StrictStr, Field(max_length=limits.REFUND_REASON_MAX_CHARS)] = ""
    out_trade_no: Key | None = Field(
        None, description="the payment to refund (a duplicate payment); default: the one that paid the order"
    )

    def request(self, mchid: str, merchant_order_no: str, out_refund_no: str) -> NewRefund:
        """The request as the ledger takes it, whole (``domain.requests.NewRefund``)."""
        return NewRefund(mchid, merchant_order_no, out_refund_no, self.amount_fen, self.reason, self.out_trade_no)


Note = Annotated[StrictStr, Field(min_length=1, max_length=500, description="why: kept in the order's history")]


class ResolveReview(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note
    action: Literal["accept", "refund"] = Field(
        description="accept: keep the money; refund: give back the duplicate payment, or what was paid beyond the "
        "order's amount"
    )
    out_trade_no: Key | None = Field(None, description="with refund: the payment to give back (default: the one)")


class HandleAbnormalRefund(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["merchant_bank_card", "settled_offline"] = Field(
        description="merchant_bank_card: WeChat pays it to the merchant's bank account (API v3); settled_offline: "
        "the money went back another way, recorded with the note"
    )
    note: Note


class ReviewNote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note


class MiniProgramLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    appid: AppId | None = None


class MiniProgramDecrypt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    openid: OpenId = Field(description="the payer, as /v1/wechat/miniprogram/login answered")
    encrypted_data: Annotated[StrictStr, Field(min_length=1, max_length=16384, description="encryptedData, base64")]
    iv: Annotated[StrictStr, Field(min_length=1, max_length=64, description="iv, base64")]
    appid: AppId | None = None


class OAuthCode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[StrictStr, Field(min_length=1, max_length=128, description="the code WeChat sent back")]
    appid: AppId | None = None


class OAuthOpenId(BaseModel):
    openid: str
    appid: str


class AuthorizeUrl(BaseModel):
    url: str
    appid: str


# -- answers -------------------------------------------------------------------------------


class PresentOnly(BaseModel):
    """An answer whose absent values are left out, not sent as ``null``."""

    @model_serializer(mode="wrap")
    def _present_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class Checkout(PresentOnly):
    """The attempt the payer pays, with what its channel needs (absent keys are not sent)."""

    out_trade_no: str
    status: str
    channel: str
    expire_at: str
    code_url: str | None = Field(None, description="native: the QR code's content")
    h5_url: str | None = Field(None, description="h5: the page to send the payer to")
    pay_params: dict[str, str] | None = Field(None, description="jsapi, miniprogram: for requestPayment")
    app_params: dict[str, str] | None = Field(None, description="app: for the app SDK")


class OrderWithPayment(OrderView, TypedDict):
    """The order view with the attempt the payer pays (and, for Native, the payer's cashier page)."""

    payment: Checkout
    cashier_url: NotRequired[str]


class OrderList(BaseModel):
    orders: list[OrderView]
    next_cursor: str | None


class MiniProgramSession(PresentOnly):
    openid: str
    unionid: str | None = None


class HistoryEvent(BaseModel):
    aggregate: str
    id: str
    type: str
    version: int
    timestamp: str
    data: dict[str, Any]


class History(BaseModel):
    merchant_order_no: str
    as_of: str | None
    events: list[HistoryEvent]
    state: OrderView


class Acknowledgement(BaseModel):
    note: str
    by: str = Field(description="the role and API key id of who explained it")
    at: str


class Difference(BaseModel):
    id: str = Field(description="payment-<transaction_id> or refund-<out_refund_no>: stable across re-imports")
    kind: Literal["missing_in_ledger", "missing_in_bill", "amount_mismatch", "status_mismatch"]
    of: Literal["payment", "refund"]
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    bill_fen: int | None
    ledger_fen: int | None
    acknowledged: Acknowledgement | None = Field(None, description="finance's explanation, once given")


class Imported(BaseModel):
    lines: int
    settled_fen: int
    refunded_fen: int
    fee_fen: int


class ReconciliationReport(BaseModel):
    date: str
    mchid: str
    matched: int = Field(description="bill lines that agree with the ledger")
    differences: list[Difference] = Field(description="the first 1,000 differences (the CSV/XLSX export has all)")
    differences_total: int = Field(description="how many differences in all")
    bill_imported: bool
    counts: dict[str, int]
    acknowledged_total: int = Field(description="differences finance has explained")
    closed: bool = Field(description="every difference of the day is explained (or there is none)")


class AcknowledgeDifference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note


class Acknowledged(BaseModel):
    difference: Difference
    differences_total: int
    acknowledged_total: int
    closed: bool


class RefusedCallbackView(BaseModel):
    id: str
    received_at: str = Field(description="Beijing time")
    path: str
    remote: str
    reason: str
    headers: dict[str, str]
    body: str = Field(description="the first 4 KB, as text")
    body_bytes: int
    body_sha256: str


class RefusedCallbacks(BaseModel):
    refused: list[RefusedCallbackView]


class BillImport(ReconciliationReport):
    found: list[Difference] = Field(description="what the first comparison showed, before the ledger healed itself")
    healed: list[str] = Field(description="out_trade_no / out_refund_no that a query at WeChat settled")
    not_queried: int = Field(description="the ledger's own orders left unqueried (at most 200 queries per import)")
    imported: Imported


class JournalLine(BaseModel):
    date: str
    account: str
    debit_fen: int
    credit_fen: int
    reference: str
    event: int
    note: str = Field("", description="e.g. what the payer paid when a coupon (代金券) paid the rest")


class AccountTotals(BaseModel):
    debit_fen: int
    credit_fen: int


class TrialBalance(AccountTotals):
    accounts: dict[str, AccountTotals]


class JournalReport(BaseModel):
    from_: str = Field(alias="from")
    to: str
    lines: list[JournalLine]
    trial_balance: TrialBalance


class SaveProduct(BaseModel):
    """A product sold by a printed Native mode 1 code (API v2 merchants)."""

    model_config = ConfigDict(extra="forbid")
    product_id: Annotated[
        StrictStr,
        Field(min_length=1, max_length=limits.PRODUCT_ID_MAX_CHARS, pattern=limits.PRODUCT_ID_PATTERN),
    ]
    amount_fen: Fen
    description: Annotated[StrictStr, Field(min_length=1, max_length=limits.DESCRIPTION_MAX_BYTES)]
    active: bool = True


class ProductView(BaseModel):
    product_id: str
    amount_fen: int
    description: str
    active: bool
    created_at: str
    updated_at: str


class ProductList(BaseModel):
    products: list[ProductView]


class ProductCode(BaseModel):
    product_id: str
    code_url: str = Field(description="the signed weixin://wxpay/bizpayurl?… to print (Native mode 1)")
    svg: str = Field(description="the same as an SVG QR code, ready to print")


class BusinessEventModel(BaseModel):
    id: str = Field(description="evt_…: stable across restarts and rebuilds")
    type: str
    created_at: str
    mchid: str
    merchant_order_no: str
    data: dict[str, Any] = Field(description="detail (the ledger event's fields) and order (the order view then)")


class EventPage(BaseModel):
    events: list[BusinessEventModel]
    next_cursor: str | None = Field(description="pass as ?after= for the next page; None when there is no more yet")


class CreateWebhookEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[StrictStr, Field(min_length=8, max_length=2048)]
    event_types: list[StrictStr] | None = Field(None, description="default: every type")


class WebhookEndpoint(BaseModel):
    id: str
    url: str
    event_types: list[str]
    state: str = Field(description="active, or failing (a delivery was given up after more than a day)")
    created_at: str
    failing_since: str | None = None
    previous_secret_valid_until: str | None = None


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="shown once: keep it to verify Zhangben-Signature")


class WebhookEndpointList(BaseModel):
    endpoints: list[WebhookEndpoint]


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: Annotated[StrictInt, Field(ge=0, le=7 * 86400)] = 86400


class DeliveryAttempt(BaseModel):
    endpoint_id: str
    attempt: int
    at: str
    status_code: int | None
    latency_ms: int | None
    error: str | None
    response: str | None = Field(description="the first 1 KB of the receiver's answer")
    delivery_state: str | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryAttempt]


class Redelivered(BaseModel):
    queued: int
