"""Finance (role ``finance``): reconciliation, the journal, importing a day's bill."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from adapters.exports import render
from adapters.wechatpay.bills import BillFormatError
from api.deps import Rt, role
from api.models import Acknowledged, AcknowledgeDifference, BillImport, JournalReport, ReconciliationReport
from application.finance_exports import journal_workbook, reconciliation_workbook
from domain.apikey import Principal

router = APIRouter(prefix="/v1/finance", tags=["finance"])
Clerk = Annotated[Principal, Depends(role("finance"))]
Format = Literal["json", "csv", "xlsx"]
MEDIA = {"csv": "text/csv; charset=utf-8", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def _file(kind: str, fmt: str, name: str, content: bytes) -> Response:
    return Response(
        content, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{kind}-{name}.{fmt}"'}
    )


@router.get(
    "/reconciliation",
    summary="A day's reconciliation against WeChat's bill",
    responses={200: {"model": ReconciliationReport, "content": {MEDIA["csv"]: {}, MEDIA["xlsx"]: {}}}},
)
def reconciliation(who: Clerk, rt: Rt, date: date, format: Format = "json") -> Any:  # noqa: A002 — `format` is the query parameter's public name
    report = rt.finance.report(who.mchid, date)
    if not report["bill_imported"]:
        raise HTTPException(404, f"no bill imported for {date}: POST /v1/finance/bills/{date}/import first")
    if format == "json":
        return report
    book = reconciliation_workbook(rt.finance, [who.mchid], date, date)
    return _file("reconciliation", format, str(date), render(book, format))


@router.get(
    "/journal",
    summary="The double-entry journal and its trial balance",
    responses={200: {"model": JournalReport, "content": {MEDIA["csv"]: {}, MEDIA["xlsx"]: {}}}},
)
def journal(who: Clerk, rt: Rt, to: date, from_: Annotated[date, Query(alias="from")], format: Format = "json") -> Any:  # noqa: A002 — `format` is the query parameter's public name
    if to < from_:
        raise HTTPException(422, "to is before from")
    report = rt.finance.journal_report(who.mchid, from_, to)
    if format == "json":
        return report
    book = journal_workbook(rt.finance, [who.mchid], from_, to)
    return _file("journal", format, f"{from_}_{to}", render(book, format))


@router.post(
    "/bills/{bill_date}/import",
    response_model=BillImport,
    summary="Download the day's bill from WeChat and reconcile it",
)
def import_bill(bill_date: date, who: Clerk, rt: Rt) -> Any:
    try:
        return rt.finance.import_bill(who.mchid, bill_date)
    except BillFormatError as exc:  # BillMismatch too: a damaged file
        raise HTTPException(502, f"WeChat's bill could not be read: {exc}") from None


@router.get("/fund-flow", summary="A day's fund flow bill (资金账单) against the journal's WeChat balance")
def fund_flow(who: Clerk, rt: Rt, date: date) -> Any:
    return rt.finance.fund_flow_report(who.mchid, date)


@router.post(
    "/fund-flow/{bill_date}/import",
    summary="Download the day's fund flow bill (资金账单) from WeChat and compare it with the journal",
)
def import_fund_flow(bill_date: date, who: Clerk, rt: Rt) -> Any:
    try:
        return rt.finance.import_fund_flow(who.mchid, bill_date)
    except BillFormatError as exc:
        raise HTTPException(502, f"WeChat's fund flow bill could not be read: {exc}") from None


@router.post(
    "/reconciliation/{bill_date}/differences/{difference_id}/acknowledge",
    response_model=Acknowledged,
    summary="Explain one difference of a day's reconciliation; the day closes when every one is explained",
)
def acknowledge(bill_date: date, difference_id: str, body: AcknowledgeDifference, who: Clerk, rt: Rt) -> Any:
    return rt.finance.acknowledge(who.mchid, bill_date, difference_id, body.note, who.actor)
