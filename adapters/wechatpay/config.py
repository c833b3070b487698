"""Merchants from ``zhangben.toml``, their secrets read from files (README, "Settings").

Every problem is a ``MerchantConfigError`` naming the merchant, the setting and
the file — never the secret.  A secret file that group or others can read
is refused: the key would already be leaked to every account on the host.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.wechatpay.errors import MerchantConfigError
from adapters.wechatpay.signing import load_private_key, load_public_key


@dataclass(frozen=True)
class Merchant:
    """One merchant as the ledger sees it: who signs, who owns the orders, which keys."""

    name: str
    mode: str  # "direct" | "partner"
    account_mchid: str  # the mchid that signs requests (the service provider's in partner mode)
    appid: str  # appid, or sp_appid in partner mode
    sub_mchid: str
    sub_appid: str
    notify_url: str
    private_key: rsa.RSAPrivateKey
    cert_serial_no: str
    apiv3_key: bytes
    public_key_id: str
    platform_public_key: rsa.RSAPublicKey | None
    appsecret: str | None

    @property
    def is_partner(self) -> bool:
        return self.mode == "partner"

    @property
    def mchid(self) -> str:
        """The id the ledger keeps orders under: the sub-merchant's in partner mode."""
        return self.sub_mchid if self.is_partner else self.account_mchid

    def __repr__(self) -> str:  # never print keys
        return f"Merchant({self.name!r}, mchid={self.mchid}, mode={self.mode})"


def _secret_path(base: Path, table: dict[str, Any], key: str, where: str) -> Path:
    value = table.get(key)
    if not value:
        raise MerchantConfigError(f"{where}: `{key}` is not set")
    path = Path(str(value))
    path = path if path.is_absolute() else base / path
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise MerchantConfigError(f"{where}: `{key}` names {path}, which does not exist") from None
    except OSError as exc:
        raise MerchantConfigError(f"{where}: `{key}` = {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MerchantConfigError(f"{where}: `{key}` = {path} is readable by group or others; run `chmod 600 {path}`")
    return path


def _read_secret(base: Path, table: dict[str, Any], key: str, where: str) -> bytes:
    path = _secret_path(base, table, key, where)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MerchantConfigError(f"{where}: `{key}` = {path}: {exc.strerror}") from None


def load_merchant(table: dict[str, Any], base: Path, where: str) -> Merchant:
    mode = table.get("mode", "direct")
    if mode not in ("direct", "partner"):
        raise MerchantConfigError(f'{where}: `mode` must be "direct" or "partner"')
    account = str(table.get("sp_mchid") or table.get("mchid") or "")
    appid = str(table.get("sp_appid") or table.get("appid") or "")
    if not account or not appid:
        raise MerchantConfigError(f"{where}: `mchid` and `appid` are required")
    if mode == "partner" and not table.get("sub_mchid"):
        raise MerchantConfigError(f"{where}: a partner merchant needs `sub_mchid`")
    raw_key = _read_secret(base, table, "private_key_file", where)
    try:
        private_key = load_private_key(raw_key)
    except Exception:  # noqa: BLE001 — any parse failure is the same mistake to the user
        path = _secret_path(base, table, "private_key_file", where)
        raise MerchantConfigError(f"{where}: `private_key_file` = {path} is not an RSA private key in PEM") from None
    apiv3_key = _read_secret(base, table, "apiv3_key_file", where).strip()
    if len(apiv3_key) != 32:
        path = _secret_path(base, table, "apiv3_key_file", where)
        raise MerchantConfigError(
            f"{where}: `apiv3_key_file` = {path} must hold the 32-byte APIv3 key (it holds {len(apiv3_key)} bytes)"
        )
    serial = str(table.get("cert_serial_no") or "").upper()
    if not serial:
        raise MerchantConfigError(f"{where}: `cert_serial_no` is required (the API certificate's serial)")
    public_key = None
    if table.get("platform_public_key_file"):
        raw_public = _read_secret(base, table, "platform_public_key_file", where)
        try:
            public_key = load_public_key(raw_public)
        except Exception:  # noqa: BLE001 — any parse failure is the same mistake to the user
            raise MerchantConfigError(f"{where}: `platform_public_key_file` is not a public key in PEM") from None
        if not str(table.get("public_key_id", "")).startswith("PUB_KEY_ID_"):
            raise MerchantConfigError(f"{where}: `public_key_id` must be the key's PUB_KEY_ID_… id")
    appsecret = None
    if table.get("appsecret_file"):
        appsecret = _read_secret(base, table, "appsecret_file", where).decode().strip()
    notify_url = str(table.get("notify_url") or "")
    if not notify_url:
        raise MerchantConfigError(f"{where}: `notify_url` is required")
    return Merchant(
        name=str(table.get("name") or account),
        mode=mode,
        account_mchid=account,
        appid=appid,
        sub_mchid=str(table.get("sub_mchid") or ""),
        sub_appid=str(table.get("sub_appid") or ""),
        notify_url=notify_url,
        private_key=private_key,
        cert_serial_no=serial,
        apiv3_key=apiv3_key,
        public_key_id=str(table.get("public_key_id") or ""),
        platform_public_key=public_key,
        appsecret=appsecret,
    )


def load_merchants(tables: list[dict[str, Any]], config_path: Path) -> dict[str, Merchant]:
    """The v3 merchants, keyed by the id the ledger keeps their orders under."""
    merchants: dict[str, Merchant] = {}
    for i, table in enumerate(tables):
        if table.get("api", "v3") != "v3":
            continue  # v2 merchants are served by the v2 adapter
        where = f"{config_path} [[merchants]] {table.get('name') or i + 1}"
        merchant = load_merchant(table, config_path.parent, where)
        merchants[merchant.mchid] = merchant
    return merchants
