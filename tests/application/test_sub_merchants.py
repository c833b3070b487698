"""The sub-merchant records and the book every process keeps of them (application/submerchants.py), on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.wechatpay.config import Merchant
from adapters.wechatpay.merchant_book import MerchantBook
from application.apikeys import ApiKeys
from application.submerchants import TOPICS, SubMerchants
from bootstrap.ledger import open_directory
from domain.errors import Conflict, InvalidInput, NotFound

PROVIDER = Merchant(
    name="sp", mode="partner", account_mchid="1900000100", appid="wx8888888888888888", sub_mchid="",
    sub_appid="", notify_url="https://pay.example.com/wechatpay/v3/notify", private_key=None, cert_serial_no="S",
    apiv3_key=b"k" * 32, public_key_id="", platform_public_key=None, appsecret=None,
)  # fmt: skip


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/d.db"
    open_directory(url, create_tables=True).close()
    return url


def desk(url: str) -> SubMerchants:
    directory = open_directory(url)
    return SubMerchants(directory, MerchantBook({}, {PROVIDER.account_mchid: PROVIDER}), ApiKeys(directory))


@pytest.fixture
def two(url: str) -> Iterator[tuple[SubMerchants, SubMerchants]]:
    """Two processes' desks on one directory."""
    a, b = desk(url), desk(url)
    yield a, b
    a.directory.close()
    b.directory.close()


def test_a_sub_merchant_added_in_one_process_is_followed_by_another(two: tuple[SubMerchants, SubMerchants]) -> None:
    a, b = two
    apps = [{"appid": "wx0123456789abcdef", "channels": ["jsapi"]}]
    record, created = a.add("1900000100", "1900000301", {"name": "一店", "apps": apps}, "provider k1")
    assert created and a.book["1900000301"].sub_appid == "wx0123456789abcdef"
    assert a.book["1900000301"].notify_url == "https://pay.example.com/wechatpay/v3/notify/1900000301"
    assert "1900000301" not in b.book
    assert b.follow() == 1 and b.book["1900000301"].name == "一店" and b.book["1900000301"].active
    a.change("1900000100", "1900000301", {"active": False, "qr_ttl_minutes": 2}, "provider k1")
    b.follow()
    assert not b.book["1900000301"].active and b.book["1900000301"].qr_ttl_minutes == 2
    assert b.follow() == 0  # the look-back reads the last events again: known versions, nothing changes
    assert [type(e).__name__ for e in b.history("1900000301")] == ["Created", "Changed"]


def test_a_record_whose_events_are_not_all_read_is_read_whole(two: tuple[SubMerchants, SubMerchants]) -> None:
    a, b = two
    a.add("1900000100", "1900000302", {"name": "二店"}, "p")
    b.follow()
    for n in range(3):
        a.change("1900000100", "1900000302", {"name": f"二店 {n}"}, "p")
    page = a.directory.recorder.select_notifications(1, 100, topics=TOPICS)
    # only the last change seen, the two before it not yet (committed out of order): the record is read whole
    (touched,) = b._fold(page[-1:])
    assert b._records[touched].settings["name"] == "二店 2" and b._records[touched].version == 4


def test_settings_are_checked_and_another_providers_sub_merchant_is_absent(url: str) -> None:
    one = desk(url)
    try:
        with pytest.raises(InvalidInput):
            one.add("1900000100", "12", {}, "p")
        with pytest.raises(InvalidInput, match="claimed"):
            one.add("1900000100", "1900000303", {"apps": [
                {"appid": "wx0123456789abcdef", "channels": ["jsapi"]},
                {"appid": "wx0123456789abcde0", "channels": ["jsapi"]},
            ]}, "p")  # fmt: skip
        with pytest.raises(InvalidInput):
            one.add("1900000100", "1900000303", {"order_ttl_minutes": 0}, "p")
        with pytest.raises(NotFound):
            one.add("1900000999", "1900000303", {}, "p")  # no such provider
        one.add("1900000100", "1900000303", {"return_url_hosts": ["Shop.Example.com"]}, "p")
        assert one.book["1900000303"].return_url_hosts == ("shop.example.com",)
        with pytest.raises(Conflict):
            one.add("1900000100", "1900000303", {"name": "other"}, "p")
        with pytest.raises(NotFound):
            one.get("1900000999", "1900000303")
    finally:
        one.directory.close()
