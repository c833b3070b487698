"""``/v1/products``: the catalogue behind printed Native mode 1 codes (docs/api.md, "Products").

A product's code names only its ``product_id``: change the price here and
the printed code sells at the new price from the next scan.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import segno
from fastapi import APIRouter, Query, Response

from api.deps import Merchant, Rt
from api.models import ProductCode, ProductList, ProductView, SaveProduct
from application.products import product_view

router = APIRouter(prefix="/v1", tags=["products"])


@router.post(
    "/products",
    status_code=201,
    response_model=ProductView,
    summary="Create a product, or change its price, description or active flag",
    responses={200: {"model": ProductView, "description": "an existing product, changed (or unchanged)"}},
)
def save_product(body: SaveProduct, who: Merchant, rt: Rt, response: Response) -> dict[str, Any]:
    product, created = rt.products.save(who.mchid, body.product_id, body.amount_fen, body.description, body.active)
    if not created:
        response.status_code = 200
    return product_view(product)


@router.get("/products", response_model=ProductList, summary="The merchant's products")
async def list_products(who: Merchant, rt: Rt) -> dict[str, Any]:
    products = await asyncio.to_thread(rt.products.list, who.mchid)
    return {"products": [product_view(p) for p in products]}


@router.get("/products/{product_id}", response_model=ProductView, summary="One product")
def get_product(product_id: str, who: Merchant, rt: Rt) -> dict[str, Any]:
    return product_view(rt.products.get(who.mchid, product_id))


@router.get(
    "/products/{product_id}/qr",
    response_model=ProductCode,
    summary="The product's printable code: the signed bizpayurl, and an SVG (format=svg: the SVG alone)",
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def product_code(
    product_id: str,
    who: Merchant,
    rt: Rt,
    format: Annotated[Literal["json", "svg"], Query()] = "json",  # noqa: A002 — the query parameter's name
) -> Any:
    code_url = rt.products.code_url(who.mchid, product_id)
    svg = segno.make(code_url, error="m").svg_inline(border=4, scale=4)
    if format == "svg":
        return Response(svg, media_type="image/svg+xml")
    return {"product_id": product_id, "code_url": code_url, "svg": svg}
