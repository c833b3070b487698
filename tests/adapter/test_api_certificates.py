"""A renewal of the merchant's API certificate: old and new serials both valid, the newest valid one signs.

Against the sandbox over real HTTP, which accepts every certificate registered
for the merchant and refuses an unknown or expired serial, as WeChat does.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from adapters.wechatpay.client import WechatPayClient
from adapters.wechatpay.config import Merchant, MerchantConfigError, load_merchants
from adapters.wechatpay.errors import WechatPayError
from sandbox.config import sandbox_config
from sandbox.keyset import DIRECT
from tests.fixtures_sandbox import RunningSandbox

NOW = datetime.now(UTC)


def write_certificate(folder: Path, not_before: datetime, not_after: datetime) -> tuple[dict[str, str], str]:
    """A new API key and certificate in ``folder`` (mode 600): its ``[[merchants.api_certificates]]`` table."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{DIRECT.mchid} renewed")])
    serial = int.from_bytes(secrets.token_bytes(8), "big") | (1 << 63)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    files = {
        "private_key_file": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "cert_file": cert.public_bytes(serialization.Encoding.PEM),
    }
    table = {}
    for setting, data in files.items():
        path = folder / f"{setting}.pem"
        path.write_bytes(data)
        os.chmod(path, 0o600)
        table[setting] = str(path)
    return table, format(serial, "X")


def direct_table(keyset: Path, *renewed: dict[str, str]) -> dict[str, Any]:
    tables = tomllib.loads((keyset / "zhangben.toml").read_text())["merchants"]
    direct = next(t for t in tables if t["mchid"] == DIRECT.mchid)
    return direct | {"api_certificates": list(renewed)}


def merchant(keyset: Path, *renewed: dict[str, str]) -> Merchant:
    return load_merchants([direct_table(keyset, *renewed)], keyset / "zhangben.toml")[DIRECT.mchid]


def test_the_newest_valid_certificate_signs(keyset: Path, tmp_path: Path) -> None:
    old = merchant(keyset)
    old_serial = old.cert_serial_no
    renewed, new_serial = write_certificate(tmp_path / "new", NOW - timedelta(hours=1), NOW + timedelta(days=2000))
    both = merchant(keyset, renewed)
    assert [c.serial_no for c in both.api_certificates] == [old_serial, new_serial]
    assert both.signing_certificate().serial_no == new_serial
    # the warnings follow the certificate that expires last: the renewed one
    assert both.last_api_certificate is not None and both.last_api_certificate.serial_no == new_serial
    # one not valid yet waits; once the old one has expired, only the new one signs
    future, future_serial = write_certificate(tmp_path / "future", NOW + timedelta(days=3), NOW + timedelta(days=900))
    assert merchant(keyset, future).signing_certificate().serial_no == old_serial
    assert merchant(keyset, future).signing_certificate(NOW + timedelta(days=4)).serial_no == future_serial
    old_end = old.api_cert_expires_at
    assert old_end is not None
    assert both.signing_certificate(old_end + timedelta(seconds=1)).serial_no == new_serial


def test_a_renewed_certificate_must_be_whole_and_listed_once(keyset: Path, tmp_path: Path) -> None:
    renewed, serial = write_certificate(tmp_path / "new", NOW - timedelta(hours=1), NOW + timedelta(days=30))
    with pytest.raises(MerchantConfigError, match="`cert_file` is required"):
        merchant(keyset, {"private_key_file": renewed["private_key_file"]})
    with pytest.raises(MerchantConfigError, match="listed twice"):
        merchant(keyset, renewed, renewed)
    with pytest.raises(MerchantConfigError, match="is not the serial of `cert_file`"):
        merchant(keyset, renewed | {"cert_serial_no": "ABC123"})
    other, _ = write_certificate(tmp_path / "other", NOW - timedelta(hours=1), NOW + timedelta(days=30))
    with pytest.raises(MerchantConfigError, match="not the certificate of `private_key_file`"):
        merchant(keyset, renewed | {"cert_file": other["cert_file"]})
    assert merchant(keyset, renewed | {"cert_serial_no": serial.lower()}).signing_certificate().serial_no == serial


def query_at(sandbox: RunningSandbox, signer: Merchant) -> str:
    """Ask the sandbox about an order it does not know: a signed request it accepted answers ORDER_NOT_EXIST."""
    client = WechatPayClient(sandbox.url, {signer.mchid: signer}, sleep=lambda _: None)
    try:
        client.query(signer, "ZB-RENEWAL-0001")
    except WechatPayError as exc:
        return exc.code
    finally:
        client.close_http()
    return "OK"


def start(keyset: Path, tmp_path: Path, table: dict[str, Any]) -> RunningSandbox:
    """A sandbox whose merchant registered the certificates in ``table`` (WeChat learns them in 商户平台)."""
    data = tomllib.loads((keyset / "zhangben.toml").read_text()) | {"merchants": [table]}
    config = sandbox_config(data, keyset / "zhangben.toml")
    return RunningSandbox(dataclasses.replace(config, database=tmp_path / "sandbox.db"))


def test_wechat_accepts_both_serials_during_a_renewal_and_refuses_others(keyset: Path, tmp_path: Path) -> None:
    renewed, new_serial = write_certificate(tmp_path / "new", NOW - timedelta(hours=1), NOW + timedelta(days=2000))
    stranger, _ = write_certificate(tmp_path / "stranger", NOW - timedelta(minutes=1), NOW + timedelta(days=2000))
    sandbox = start(keyset, tmp_path, direct_table(keyset, renewed))
    try:
        old_only, both = merchant(keyset), merchant(keyset, renewed)
        assert both.signing_certificate().serial_no == new_serial
        assert query_at(sandbox, both) == "ORDER_NOT_EXIST"  # the new serial is accepted
        assert query_at(sandbox, old_only) == "ORDER_NOT_EXIST"  # and a worker still on the old config too
        # a certificate WeChat does not know (not registered) signs nothing it accepts
        assert query_at(sandbox, merchant(keyset, renewed, stranger)) == "SIGN_ERROR"
    finally:
        sandbox.stop()


def test_an_expired_certificate_is_refused_at_wechat(keyset: Path, tmp_path: Path) -> None:
    expired, _ = write_certificate(tmp_path / "expired", NOW - timedelta(days=400), NOW - timedelta(days=1))
    sandbox = start(keyset, tmp_path, direct_table(keyset, expired))
    try:
        valid = merchant(keyset, expired)
        assert valid.signing_certificate().serial_no == valid.cert_serial_no  # the ledger never signs with it
        expired_signer = dataclasses.replace(valid, api_certificates=valid.api_certificates[1:])
        assert query_at(sandbox, expired_signer) == "SIGN_ERROR"
    finally:
        sandbox.stop()
