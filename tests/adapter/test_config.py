"""Merchant configuration: every mistake is a startup error naming the setting and the file, never the secret."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.wechatpay.config import load_merchants
from adapters.wechatpay.errors import MerchantConfigError
from sandbox.keyset import DIRECT, DIRECT_OA_APPID, init_keyset


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("cfg")
    init_keyset(root / "keys", root / "zhangben.toml", "http://l", "http://s")
    return root / "zhangben.toml", tomllib.loads((root / "zhangben.toml").read_text())["merchants"]


def test_the_generated_config_loads(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    merchants = load_merchants(tables, path)
    assert set(merchants) == {"1900000001", "1900000109", "1900000002", "1900000209"}
    assert set(load_merchants(tables, path, api="v3")) == {"1900000001", "1900000109"}
    partner = merchants["1900000109"]
    assert partner.is_partner and partner.account_mchid == "1900000100"
    assert "BEGIN" not in repr(partner)
    v2, v2_partner = merchants["1900000002"], merchants["1900000209"]
    assert v2.is_v2 and v2.v2_sign_type == "MD5" and len(v2.v2_key) == 32 and v2.client_cert_file is not None
    assert v2.refund_notify_url == "http://l/wechatpay/v2/refund-notify/1900000002"  # the merchant in the path
    assert v2_partner.is_partner and v2_partner.v2_sign_type == "HMAC-SHA256"
    assert v2.v2_key not in repr(v2)


def test_v2_settings_are_checked(config: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    path, tables = config
    v2 = next(t for t in tables if t["api"] == "v2")
    short = tmp_path / "short"
    short.write_text("abc")
    short.chmod(0o600)
    with pytest.raises(MerchantConfigError, match="32-character API key"):
        load_merchants([v2 | {"v2_key_file": str(short)}], path)
    with pytest.raises(MerchantConfigError, match="v2_sign_type"):
        load_merchants([v2 | {"v2_sign_type": "SHA1"}], path)
    with pytest.raises(MerchantConfigError, match="client_key_file"):
        load_merchants([{k: v for k, v in v2.items() if k != "client_key_file"}], path)
    with pytest.raises(MerchantConfigError, match="configured twice"):
        load_merchants([v2, v2], path)


def _with(tables: list[dict[str, Any]], **change: str) -> list[dict[str, Any]]:
    return [tables[0] | change]


def test_group_readable_secret(config: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    path, tables = config
    leaky = tmp_path / "apiv3_key"
    leaky.write_bytes(b"k" * 32)
    os.chmod(leaky, 0o640)
    with pytest.raises(MerchantConfigError) as info:
        load_merchants(_with(tables, apiv3_key_file=str(leaky)), path)
    assert "apiv3_key_file" in str(info.value) and str(leaky) in str(info.value)
    assert "chmod 600" in str(info.value) and "kkkk" not in str(info.value)


def test_missing_file(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    with pytest.raises(MerchantConfigError, match="private_key_file.*does not exist"):
        load_merchants(_with(tables, private_key_file="/nonexistent/key.pem"), path)


def test_malformed_key(config: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    path, tables = config
    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----\n")
    os.chmod(bad, 0o600)
    with pytest.raises(MerchantConfigError) as info:
        load_merchants(_with(tables, private_key_file=str(bad)), path)
    assert "not an RSA private key" in str(info.value) and "secretstuff" not in str(info.value)


def test_apiv3_key_of_the_wrong_length(config: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    path, tables = config
    short = tmp_path / "apiv3"
    # a pasted 40-character key (docs/wechatpay-protocol.md §9)
    short.write_bytes(b"0123456789abcdef0123456789abcdef0123456789")
    os.chmod(short, 0o600)
    with pytest.raises(MerchantConfigError) as info:
        load_merchants(_with(tables, apiv3_key_file=str(short)), path)
    assert "32-byte" in str(info.value) and "42 bytes" in str(info.value) and "0123456789" not in str(info.value)


def test_public_key_needs_its_id(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    with pytest.raises(MerchantConfigError, match="PUB_KEY_ID_"):
        load_merchants(_with(tables, public_key_id="7132D72A03E9"), path)
    assert DIRECT.mchid in load_merchants(tables, path)


def test_several_apps_under_one_mchid(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    direct = load_merchants(tables, path)[DIRECT.mchid]
    assert direct.payer_appids == (DIRECT.appid, DIRECT_OA_APPID)
    assert direct.app_for_channel("jsapi") == DIRECT_OA_APPID
    assert direct.app_for_channel("miniprogram") == direct.app_for_channel("native") == DIRECT.appid
    oa = direct.with_app(DIRECT_OA_APPID)
    assert oa.appid == oa.payer_appid == DIRECT_OA_APPID and oa.appsecret and oa.appsecret != direct.appsecret
    assert oa.appsecret not in repr(oa) and direct.with_app(DIRECT.appid) is direct
    assert direct.knows_appid(DIRECT_OA_APPID) and not direct.knows_appid("wx0000000000000000")


def test_one_mchid_twice_or_one_channel_for_two_apps_is_refused(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    direct = next(t for t in tables if t["mchid"] == DIRECT.mchid)
    second = {k: v for k, v in direct.items() if k != "apps"} | {"appid": "wx1111111111111111", "name": "mini"}
    with pytest.raises(MerchantConfigError, match="merchant 1900000001 is configured twice .*merchants.apps"):
        load_merchants([direct, second], path)
    with pytest.raises(MerchantConfigError, match="configured twice"):  # also across API versions
        load_merchants([direct, second | {"api": "v2"}], path, api="v3")
    clash = direct | {"apps": [*direct["apps"], {"appid": "wx2222222222222222", "channels": ["jsapi"]}]}
    with pytest.raises(MerchantConfigError, match="channel 'jsapi' is claimed by app wx5f6e7d8c9b0a1f2e and app wx2"):
        load_merchants([clash], path)
    with pytest.raises(MerchantConfigError, match="`channels` must be a list of"):
        load_merchants([direct | {"apps": [{"appid": "wx3", "channels": ["wap"]}]}], path)
    with pytest.raises(MerchantConfigError, match="`appid` is required"):
        load_merchants([direct | {"apps": [{"channels": ["app"]}]}], path)
    # an app without channels is chosen only by name; one-app configs keep working
    named_only = direct | {"apps": [{"appid": "wx4444444444444444"}]}
    merchant = load_merchants([named_only], path)[DIRECT.mchid]
    assert merchant.app_for_channel("jsapi") == DIRECT.appid and "wx4444444444444444" in merchant.payer_appids
    plain = {k: v for k, v in direct.items() if k != "apps"}
    assert load_merchants([plain], path)[DIRECT.mchid].payer_appids == (DIRECT.appid,)


def test_notify_url_rules(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    direct = next(t for t in tables if t["mchid"] == DIRECT.mchid)
    with pytest.raises(MerchantConfigError, match="must not carry a query string"):
        load_merchants([direct | {"notify_url": "https://pay.example.com/wechatpay/v3/notify?shop=1"}], path)
    with pytest.raises(MerchantConfigError, match="must be https"):
        load_merchants([direct | {"notify_url": "http://pay.example.com/wechatpay/v3/notify"}], path, https_only=True)
    with pytest.raises(MerchantConfigError, match="absolute https URL"):
        load_merchants([direct | {"notify_url": "/wechatpay/v3/notify"}], path)
    https = direct | {"notify_url": "https://pay.example.com/wechatpay/v3/notify"}
    assert load_merchants([https], path, https_only=True)[DIRECT.mchid].notify_url.startswith("https://")
    assert load_merchants([direct], path)[DIRECT.mchid].notify_url.startswith("http://")  # the sandbox's


def test_the_api_certificate_must_be_the_configured_one(config: tuple[Path, list[dict[str, Any]]]) -> None:
    path, tables = config
    direct = next(t for t in tables if t["mchid"] == DIRECT.mchid)
    merchant = load_merchants([direct], path)[DIRECT.mchid]
    assert merchant.api_cert_expires_at is not None and merchant.api_cert_expires_at.tzinfo is not None
    with pytest.raises(MerchantConfigError, match="is not the serial of `cert_file`"):
        load_merchants([direct | {"cert_serial_no": "ABCDEF0123456789"}], path)
    partner = next(t for t in tables if t.get("sub_mchid") == "1900000109")
    with pytest.raises(MerchantConfigError, match="cert_serial_no|not the certificate"):
        load_merchants([direct | {"cert_file": partner["cert_file"]}], path)
