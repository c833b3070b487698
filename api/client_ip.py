"""The payer's IP address, for WeChat's H5 risk checks (``scene_info.payer_client_ip``).

In order: the ``payer_client_ip`` the merchant's back end puts in the body
(it saw the payer); else ``X-Forwarded-For`` / ``X-Real-IP``, but only when the
request came through a proxy listed in ``trusted_proxies`` (anyone else can
write those headers); else the peer itself.  ``X-Forwarded-For`` is read from
the right, past the trusted proxies, so a value the payer forged on the left
is never taken.
https://pay.weixin.qq.com/doc/v3/merchant/4012791834 (H5 下单: scene_info.payer_client_ip)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def payer_ip(request: Request, from_body: str | None, proxies: Sequence[Network]) -> str:
    """The payer's address as the ledger can best know it (see the module's docstring)."""
    if from_body:
        return from_body
    peer = request.client.host if request.client else "127.0.0.1"
    if not _trusted(_address(peer), proxies):
        return peer
    forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
    for hop in reversed(forwarded):
        address = _address(hop)
        if address is None:
            break  # a malformed hop: nothing left of it can be trusted
        if not _trusted(address, proxies):
            return str(address)
    real = _address(request.headers.get("x-real-ip", ""))
    if real is not None:
        return str(real)
    if forwarded and _address(forwarded[0]) is not None:
        return str(_address(forwarded[0]))  # every hop was a trusted proxy: the leftmost is the client
    return peer


def source_ip(request: Request, proxies: Sequence[Network]) -> str:
    """Who sent the request: the peer, or behind a trusted proxy the address it forwarded for (a notification's
    source, checked against ``[callbacks] allowed_networks``)."""
    return payer_ip(request, None, proxies)


def within(address: str, networks: Sequence[Network]) -> bool:
    found = _address(address)
    return found is not None and any(found in network for network in networks)
