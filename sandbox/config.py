"""What the sandbox knows: merchants (from their certificates and keys) and its own platform keys."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.wechatpay.signing import certificate_serial, load_private_key, load_public_key


class SandboxConfigError(Exception):
    pass


@dataclass(frozen=True)
class SandboxMerchant:
    """A merchant account as WeChat Pay holds it (a service provider's, in partner mode)."""

    mchid: str
    appids: frozenset[str]
    apiv3_key: bytes
    v2_key: str
    sub_merchants: dict[str, frozenset[str]] = field(default_factory=dict)  # sub_mchid → its sub_appids
    appsecrets: dict[str, str] = field(default_factory=dict)  # appid → appsecret
    cert_pem: bytes = b""  # the API certificate: v2 refunds present it in the TLS handshake
    # serial → (public key, notAfter) of every API certificate registered at WeChat: the main one and, during a
    # renewal, the new one beside it ([[merchants.api_certificates]]); both sign until the old one expires
    api_certificates: dict[str, tuple[rsa.RSAPublicKey, datetime]] = field(default_factory=dict)
    native_callback_url: str = ""  # Native mode 1's 扫码回调URL, set in the merchant platform


@dataclass(frozen=True)
class SandboxConfig:
    merchants: dict[str, SandboxMerchant]
    platform_key: rsa.RSAPrivateKey
    platform_cert_pem: bytes
    platform_serial: str
    public_key_id: str
    public_key_private: rsa.RSAPrivateKey
    mode: str
    database: Path
    tls_cert_file: Path | None = None  # the TLS listener for /secapi/* (mutual TLS), when configured
    tls_key_file: Path | None = None
    tls_port: int | None = None  # from the ledger's ``wechatpay_secapi_base_url``, so both agree

    def merchant_for_appid(self, appid: str) -> tuple[SandboxMerchant, str] | None:
        for merchant in self.merchants.values():
            if appid in merchant.appsecrets:
                return merchant, merchant.appsecrets[appid]
        return None


def _read(base: Path, table: dict[str, Any], key: str, where: str) -> bytes:
    value = table.get(key)
    if not value:
        raise SandboxConfigError(f"{where}: `{key}` is not set")
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SandboxConfigError(f"{where}: `{key}` = {path}: {exc.strerror}") from None


def _apps(base: Path, table: dict[str, Any], where: str) -> dict[str, str]:
    """The merchant's other apps (``[[merchants.apps]]``): appid → appsecret ("" when none is configured)."""
    apps: dict[str, str] = {}
    for i, app in enumerate(table.get("apps", [])):
        if isinstance(app, dict) and app.get("appid"):
            here = f"{where} [[merchants.apps]] {i + 1}"
            secret = _read(base, app, "appsecret_file", here).decode().strip() if app.get("appsecret_file") else ""
            apps[str(app["appid"])] = secret
    return apps


def _api_certificates(
    base: Path, table: dict[str, Any], where: str, main: bytes
) -> dict[str, tuple[rsa.RSAPublicKey, datetime]]:
    pems = [main] + [
        _read(base, extra, "cert_file", f"{where} [[merchants.api_certificates]] {i + 1}")
        for i, extra in enumerate(table.get("api_certificates", []))
        if isinstance(extra, dict)
    ]
    certificates: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}
    for pem in pems:
        certificate = x509.load_pem_x509_certificate(pem)
        certificates[certificate_serial(pem)] = (load_public_key(pem), certificate.not_valid_after_utc)
    return certificates


def load_sandbox_config(config_path: Path) -> SandboxConfig:
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SandboxConfigError(f"{config_path} not found: run `zhangben keys init` first") from None
    except tomllib.TOMLDecodeError as exc:
        raise SandboxConfigError(f"{config_path}: not valid TOML: {exc}") from None
    return sandbox_config(data, config_path)


def sandbox_config(data: dict[str, Any], config_path: Path) -> SandboxConfig:
    """The sandbox's view of a parsed ``zhangben.toml`` (files named in it are relative to ``config_path``)."""
    base = config_path.parent
    sandbox = data.get("sandbox")
    if not isinstance(sandbox, dict):
        raise SandboxConfigError(f"{config_path}: no [sandbox] table (the sandbox's own keys)")
    merchants: dict[str, SandboxMerchant] = {}
    tables = [("merchants", t) for t in data.get("merchants", [])] + [
        ("providers", t) for t in data.get("providers", [])
    ]
    for i, (kind, table) in enumerate(tables):
        where = f"{config_path} [[{kind}]] {i + 1}"
        mchid = str(table.get("sp_mchid") or table.get("mchid") or "")
        if not mchid:
            raise SandboxConfigError(f"{where}: no mchid")
        cert = _read(base, table, "cert_file", where)
        appid = str(table.get("sp_appid") or table.get("appid") or "")
        secret = _read(base, table, "appsecret_file", where).decode().strip() if table.get("appsecret_file") else ""
        existing = merchants.get(mchid)
        subs = dict(existing.sub_merchants) if existing else {}
        secrets_by_app = dict(existing.appsecrets) if existing else {}
        appids = set(existing.appids) if existing else set()
        appids.add(appid)
        secrets_by_app[appid] = secret
        apps = _apps(base, table, where)  # [[merchants.apps]]: more appids (sub_appids for a sub-merchant)
        if table.get("sub_mchid"):
            sub_appids = {str(table.get("sub_appid") or "")} | set(apps)
            subs[str(table["sub_mchid"])] = frozenset(a for a in sub_appids if a)
            if table.get("sub_appid"):
                secrets_by_app[str(table["sub_appid"])] = secret
        else:
            appids |= set(apps)
        secrets_by_app |= {app: app_secret or secret for app, app_secret in apps.items()}
        merchants[mchid] = SandboxMerchant(
            mchid=mchid,
            appids=frozenset(appids),
            apiv3_key=_read(base, table, "apiv3_key_file", where).strip(),
            v2_key=_read(base, table, "v2_key_file", where).decode().strip()
            if table.get("v2_key_file")
            else (existing.v2_key if existing else ""),
            sub_merchants=subs,
            appsecrets=secrets_by_app,
            cert_pem=cert,
            api_certificates=_api_certificates(base, table, where, cert),
            native_callback_url=str(
                table.get("native_callback_url") or (existing.native_callback_url if existing else "")
            ),
        )
    mode = sandbox.get("mode", "both")
    if mode not in ("public_key", "certificate", "both"):
        raise SandboxConfigError(f"{config_path} [sandbox]: mode must be public_key, certificate or both")
    where = f"{config_path} [sandbox]"
    cert_pem = _read(base, sandbox, "platform_cert_file", where)
    database = Path(sandbox.get("database", "var/sandbox.db"))
    tls = {key: _path(base, sandbox[key]) for key in ("tls_cert_file", "tls_key_file") if sandbox.get(key)}
    return SandboxConfig(
        merchants=merchants,
        platform_key=load_private_key(_read(base, sandbox, "platform_private_key_file", where)),
        platform_cert_pem=cert_pem,
        platform_serial=certificate_serial(cert_pem),
        public_key_id=str(sandbox.get("public_key_id", "")),
        public_key_private=load_private_key(_read(base, sandbox, "public_key_private_key_file", where)),
        mode=mode,
        database=database if database.is_absolute() else base / database,
        tls_port=urlsplit(str(data.get("wechatpay_secapi_base_url") or "")).port,
        **tls,
    )


def _path(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path
