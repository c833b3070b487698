"""Merchants from ``zhangben.toml``, their secrets read from files (README, "Settings").

Every problem is a ``MerchantConfigError`` naming the merchant, the setting and
the file — never the secret.  A secret file that group or others can read
is refused: the key would already be leaked to every account on the host.
"""

from __future__ import annotations

import dataclasses
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.wechatpay.errors import MerchantConfigError
from adapters.wechatpay.signing import load_private_key, load_public_key
from domain.limits import EXPIRE_SECONDS_DEFAULT
from domain.status import Channel

CHANNELS = tuple(channel.value for channel in Channel)
ORDER_TTL_MINUTES = EXPIRE_SECONDS_DEFAULT // 60  # seed 000: "后端设置订单 expire_at（如 10 分钟）"
TTL_MINUTES_MAX = 120  # WeChat keeps a Native code_url usable for 2 hours


@dataclass(frozen=True)
class App:
    """One of the merchant's apps (公众号, 小程序, mobile app): its appid and the channels it pays for."""

    appid: str
    channels: tuple[str, ...]
    appsecret: str | None = dataclasses.field(default=None, repr=False)


@dataclass(frozen=True)
class ApiCertificate:
    """One of the merchant's API certificates (商户API证书) and its private key.

    A renewal makes a new certificate with a new serial while the old one stays
    valid at WeChat until it expires or is revoked, so a merchant may list both
    (``[[merchants.api_certificates]]``) and deploy without a moment where
    requests are signed with a serial WeChat does not know (商户平台 → 账户中心 →
    API安全 → API证书: https://pay.weixin.qq.com/index.php/core/account/api_cert).
    """

    serial_no: str
    private_key: rsa.RSAPrivateKey = dataclasses.field(repr=False)
    not_before: datetime | None = None  # None: no ``cert_file`` configured, validity unknown
    not_after: datetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return (self.not_before is None or self.not_before <= now) and (self.not_after is None or now < self.not_after)


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
    private_key: rsa.RSAPrivateKey | None
    cert_serial_no: str
    apiv3_key: bytes
    public_key_id: str
    platform_public_key: rsa.RSAPublicKey | None
    appsecret: str | None
    api: str = "v3"  # "v3" | "v2"
    v2_key: str = ""
    v2_sign_type: str = "MD5"
    client_cert_file: Path | None = None  # v2 refunds go over mutual TLS with the API certificate
    client_key_file: Path | None = None
    refund_notify_url: str = ""  # v2: where refund results go (v3 sends them to notify_url)
    apps: tuple[App, ...] = ()  # [[merchants.apps]]: more appids under this mchid (sub_appids for a sub-merchant)
    # every configured API certificate, the one in `cert_file` first; empty for v2 and hand-made merchants
    api_certificates: tuple[ApiCertificate, ...] = ()
    # the checkout (seed 000): an order's default lifetime, each QR code's (None: the order's), the hosts a
    # return_url may name, and whether new orders are taken (a deactivated sub-merchant's are refused)
    order_ttl_minutes: int = ORDER_TTL_MINUTES
    qr_ttl_minutes: int | None = None
    return_url_hosts: tuple[str, ...] = ()
    active: bool = True

    @property
    def order_ttl_seconds(self) -> int:
        return self.order_ttl_minutes * 60

    @property
    def is_partner(self) -> bool:
        return self.mode == "partner"

    @property
    def is_v2(self) -> bool:
        return self.api == "v2"

    @property
    def signing_key(self) -> rsa.RSAPrivateKey:
        """The API certificate's private key, which every v3 request is signed with."""
        if self.private_key is None:
            raise MerchantConfigError(f"merchant {self.mchid}: `private_key_file` is not set")
        return self.private_key

    def signing_certificate(self, now: datetime | None = None) -> ApiCertificate:
        """The certificate a v3 request is signed with: of those valid now, the one issued last.

        So a renewed certificate takes over as soon as it is configured and
        valid, an expired one is never used, and a not-yet-valid one waits.
        With none valid, the newest signs and WeChat's answer says why it fails.
        """
        if not self.api_certificates:
            return ApiCertificate(self.cert_serial_no, self.signing_key)
        at = now or datetime.now(UTC)
        newest_first = sorted(
            self.api_certificates, key=lambda c: c.not_before or datetime.min.replace(tzinfo=UTC), reverse=True
        )
        return next((c for c in newest_first if c.valid_at(at)), newest_first[0])

    @property
    def api_cert_expires_at(self) -> datetime | None:
        """When the merchant's last API certificate expires (None without ``cert_file``): renew before then."""
        ends = [c.not_after for c in self.api_certificates if c.not_after is not None]
        return max(ends) if ends else None

    @property
    def last_api_certificate(self) -> ApiCertificate | None:
        """The API certificate that expires last: the one to renew."""
        dated = [c for c in self.api_certificates if c.not_after is not None]
        return max(dated, key=lambda c: c.not_after or datetime.min.replace(tzinfo=UTC)) if dated else None

    @property
    def payer_appid(self) -> str:
        """The appid a payer's openid belongs to: the sub-merchant's own app when it has one."""
        return self.sub_appid if self.is_partner and self.sub_appid else self.appid

    @property
    def mchid(self) -> str:
        """The id the ledger keeps orders under: the sub-merchant's in partner mode."""
        return self.sub_mchid if self.is_partner else self.account_mchid

    @property
    def payer_appids(self) -> tuple[str, ...]:
        """Every appid a payer of this merchant may pay through: the main one, then ``[[merchants.apps]]``."""
        main = (self.payer_appid,) if self.payer_appid else ()
        return main + tuple(a.appid for a in self.apps if a.appid != self.payer_appid)

    def app_for_channel(self, channel: str) -> str:
        """The appid that pays for ``channel``: the app claiming it, else the main one."""
        return next((a.appid for a in self.apps if channel in a.channels), self.payer_appid)

    def knows_appid(self, appid: str) -> bool:
        """An appid WeChat may name in this merchant's notifications (``sp_appid`` for a sub-merchant)."""
        return appid == self.appid if self.is_partner else appid in self.payer_appids

    def with_app(self, appid: str) -> Merchant:
        """This merchant paying through ``appid`` (one of ``payer_appids``): the ids and appsecret requests use."""
        if not appid or appid == self.payer_appid:
            return self
        app = next((a for a in self.apps if a.appid == appid), None)
        if app is None:
            raise MerchantConfigError(f"merchant {self.mchid} has no app {appid}")
        if self.is_partner:
            return dataclasses.replace(self, sub_appid=app.appid, appsecret=app.appsecret)
        return dataclasses.replace(self, appid=app.appid, appsecret=app.appsecret)

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


def check_notify_url(url: str, where: str, https_only: bool) -> None:
    """WeChat's rules for a notify_url: an absolute URL without a query string, https against the real WeChat.

    https://pay.weixin.qq.com/doc/v3/merchant/4012791874 (notify_url: 必须为外网可访问的 https 地址，不能携带参数)
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MerchantConfigError(f"{where}: `notify_url` = {url!r} must be an absolute https URL")
    if parts.query or parts.fragment:
        raise MerchantConfigError(f"{where}: `notify_url` = {url!r} must not carry a query string (WeChat drops it)")
    if https_only and parts.scheme != "https":
        raise MerchantConfigError(
            f"{where}: `notify_url` = {url!r} must be https: WeChat Pay calls only https notify URLs "
            "(http is accepted only against the sandbox)"
        )


def load_merchant(table: dict[str, Any], base: Path, where: str, https_only: bool = False) -> Merchant:
    mode = table.get("mode", "direct")
    if mode not in ("direct", "partner"):
        raise MerchantConfigError(f'{where}: `mode` must be "direct" or "partner"')
    api = table.get("api", "v3")
    if api not in ("v3", "v2"):
        raise MerchantConfigError(f'{where}: `api` must be "v3" or "v2"')
    account = str(table.get("sp_mchid") or table.get("mchid") or "")
    appid = str(table.get("sp_appid") or table.get("appid") or "")
    if not account or not appid:
        raise MerchantConfigError(f"{where}: `mchid` and `appid` are required")
    if mode == "partner" and not table.get("sub_mchid"):
        raise MerchantConfigError(f"{where}: a partner merchant needs `sub_mchid`")
    notify_url = str(table.get("notify_url") or "")
    if not notify_url:
        raise MerchantConfigError(f"{where}: `notify_url` is required")
    check_notify_url(notify_url, where, https_only)
    common: dict[str, Any] = {
        "name": str(table.get("name") or account),
        "mode": mode,
        "account_mchid": account,
        "appid": appid,
        "sub_mchid": str(table.get("sub_mchid") or ""),
        "sub_appid": str(table.get("sub_appid") or ""),
        "notify_url": notify_url,
        "appsecret": _appsecret(base, table, where),
        "api": api,
        "apps": _apps(base, table, where),
        **checkout_settings(table, where),
    }
    if api == "v2":
        return Merchant(**common, **_v2_settings(base, table, where))
    return Merchant(**common, **_v3_settings(base, table, where))


def checkout_settings(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``order_ttl_minutes`` (1-120, default 10), ``qr_ttl_minutes`` (1-120, absent: the order's; an order's
    lifetime caps it, ``application.orders.attempt_expiry``) and ``return_url_hosts`` (host names) of a
    ``[[merchants]]`` table or a sub-merchant."""
    order_ttl = table.get("order_ttl_minutes", ORDER_TTL_MINUTES)
    qr_ttl = table.get("qr_ttl_minutes")
    for name, value in (("order_ttl_minutes", order_ttl), ("qr_ttl_minutes", qr_ttl)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 120):
            raise MerchantConfigError(
                f"{where}: `{name}` must be a whole number of minutes from 1 to {TTL_MINUTES_MAX}"
            )
    hosts = table.get("return_url_hosts", [])
    if not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) and HOST.fullmatch(h) for h in hosts):
        raise MerchantConfigError(f"{where}: `return_url_hosts` must be a list of host names (shop.example.com)")
    return {
        "order_ttl_minutes": order_ttl,
        "qr_ttl_minutes": qr_ttl,
        "return_url_hosts": tuple(h.lower() for h in hosts),
    }


HOST = re.compile(r"(?i)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


def _private_key(base: Path, table: dict[str, Any], key: str, where: str) -> rsa.RSAPrivateKey:
    raw_key = _read_secret(base, table, key, where)
    try:
        return load_private_key(raw_key)
    except Exception:  # noqa: BLE001 — any parse failure is the same mistake to the user
        path = _secret_path(base, table, key, where)
        raise MerchantConfigError(f"{where}: `{key}` = {path} is not an RSA private key in PEM") from None


def _appsecret(base: Path, table: dict[str, Any], where: str) -> str | None:
    if not table.get("appsecret_file"):
        return None
    return _read_secret(base, table, "appsecret_file", where).decode().strip()


def _apps(base: Path, table: dict[str, Any], where: str) -> tuple[App, ...]:
    """``[[merchants.apps]]``: each with ``appid``, ``channels`` and an optional ``appsecret_file``.

    A channel claimed by two apps is refused: an order names its channel, and
    which app pays for it must not depend on the order of the tables.  An app
    with no channels is used only when an order names its ``appid``.
    """
    tables = table.get("apps", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise MerchantConfigError(f"{where}: `apps` must be [[merchants.apps]] tables")
    apps: list[App] = []
    claimed: dict[str, str] = {}
    for i, app_table in enumerate(tables):
        here = f"{where} [[merchants.apps]] {i + 1}"
        appid = str(app_table.get("appid") or "")
        if not appid:
            raise MerchantConfigError(f"{here}: `appid` is required")
        if any(a.appid == appid for a in apps):
            raise MerchantConfigError(f"{here}: app {appid} is listed twice")
        channels = app_table.get("channels", [])
        if not isinstance(channels, list) or any(c not in CHANNELS for c in channels):
            raise MerchantConfigError(f"{here}: `channels` must be a list of {', '.join(CHANNELS)}")
        for channel in channels:
            if channel in claimed:
                raise MerchantConfigError(
                    f"{here}: channel {channel!r} is claimed by app {claimed[channel]} and app {appid}; give each "
                    "channel one app (an order may still name any app's `appid`)"
                )
            claimed[channel] = appid
        apps.append(App(appid, tuple(channels), _appsecret(base, app_table, here)))
    return tuple(apps)


def _api_certificate(
    base: Path, table: dict[str, Any], where: str, serial: str, private_key: rsa.RSAPrivateKey
) -> ApiCertificate:
    """With ``cert_file`` (apiclient_cert.pem): its serial must be ``serial`` (when given) and its key the private key's.

    Then the certificate job can warn 30 days before it expires, while a new
    one is made in 商户平台 (API安全 → 申请API证书).
    """
    if not table.get("cert_file"):
        return ApiCertificate(serial, private_key)
    path = _secret_path(base, table, "cert_file", where)
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        raise MerchantConfigError(f"{where}: `cert_file` = {path} is not a certificate in PEM") from None
    actual = format(certificate.serial_number, "X")
    if serial and actual != serial:
        raise MerchantConfigError(
            f"{where}: `cert_serial_no` {serial} is not the serial of `cert_file` = {path} "
            f"({actual}): after a renewal, update both"
        )
    certified = certificate.public_key()
    if (
        not isinstance(certified, rsa.RSAPublicKey)
        or certified.public_numbers() != private_key.public_key().public_numbers()
    ):
        raise MerchantConfigError(f"{where}: `cert_file` = {path} is not the certificate of `private_key_file`")
    return ApiCertificate(actual, private_key, certificate.not_valid_before_utc, certificate.not_valid_after_utc)


def _api_certificates(
    base: Path, table: dict[str, Any], where: str, first: ApiCertificate
) -> tuple[ApiCertificate, ...]:
    """The main certificate, then ``[[merchants.api_certificates]]`` (each ``private_key_file`` + ``cert_file``)."""
    tables = table.get("api_certificates", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise MerchantConfigError(f"{where}: `api_certificates` must be [[merchants.api_certificates]] tables")
    certificates = [first]
    for i, cert_table in enumerate(tables):
        here = f"{where} [[merchants.api_certificates]] {i + 1}"
        if not cert_table.get("cert_file"):
            raise MerchantConfigError(f"{here}: `cert_file` is required (its validity says when it may sign)")
        key = _private_key(base, cert_table, "private_key_file", here)
        serial = str(cert_table.get("cert_serial_no") or "").upper()
        certificate = _api_certificate(base, cert_table, here, serial, key)
        if any(c.serial_no == certificate.serial_no for c in certificates):
            raise MerchantConfigError(f"{here}: certificate {certificate.serial_no} is listed twice")
        certificates.append(certificate)
    return tuple(certificates)


def _v3_settings(base: Path, table: dict[str, Any], where: str) -> dict[str, Any]:
    private_key = _private_key(base, table, "private_key_file", where)
    apiv3_key = _read_secret(base, table, "apiv3_key_file", where).strip()
    if len(apiv3_key) != 32:
        path = _secret_path(base, table, "apiv3_key_file", where)
        raise MerchantConfigError(
            f"{where}: `apiv3_key_file` = {path} must hold the 32-byte APIv3 key (it holds {len(apiv3_key)} bytes)"
        )
    serial = str(table.get("cert_serial_no") or "").upper()
    if not serial:
        raise MerchantConfigError(f"{where}: `cert_serial_no` is required (the API certificate's serial)")
    certificates = _api_certificates(base, table, where, _api_certificate(base, table, where, serial, private_key))
    public_key = None
    if table.get("platform_public_key_file"):
        raw_public = _read_secret(base, table, "platform_public_key_file", where)
        try:
            public_key = load_public_key(raw_public)
        except Exception:  # noqa: BLE001 — any parse failure is the same mistake to the user
            raise MerchantConfigError(f"{where}: `platform_public_key_file` is not a public key in PEM") from None
        if not str(table.get("public_key_id", "")).startswith("PUB_KEY_ID_"):
            raise MerchantConfigError(f"{where}: `public_key_id` must be the key's PUB_KEY_ID_… id")
    return {
        "private_key": private_key,
        "cert_serial_no": serial,
        "apiv3_key": apiv3_key,
        "public_key_id": str(table.get("public_key_id") or ""),
        "platform_public_key": public_key,
        "api_certificates": certificates,
    }


def _v2_settings(base: Path, table: dict[str, Any], where: str) -> dict[str, Any]:
    """API v2: the 32-character API key and its sign type; the API certificate for refunds (mutual TLS)."""
    v2_key = _read_secret(base, table, "v2_key_file", where).decode(errors="replace").strip()
    if len(v2_key) != 32:
        path = _secret_path(base, table, "v2_key_file", where)
        raise MerchantConfigError(
            f"{where}: `v2_key_file` = {path} must hold the 32-character API key (it holds {len(v2_key)})"
        )
    sign_type = str(table.get("v2_sign_type") or "MD5")
    if sign_type not in ("MD5", "HMAC-SHA256"):
        raise MerchantConfigError(f'{where}: `v2_sign_type` must be "MD5" or "HMAC-SHA256"')
    cert_file = key_file = None
    if table.get("client_cert_file") or table.get("client_key_file"):
        cert_file = _secret_path(base, table, "client_cert_file", where)
        key_file = _secret_path(base, table, "client_key_file", where)
        _private_key(base, table, "client_key_file", where)  # a readable RSA key now, not at the first refund
    private_key = _private_key(base, table, "private_key_file", where) if table.get("private_key_file") else None
    return {
        "private_key": private_key,
        "cert_serial_no": str(table.get("cert_serial_no") or "").upper(),
        "apiv3_key": b"",
        "public_key_id": "",
        "platform_public_key": None,
        "v2_key": v2_key,
        "v2_sign_type": sign_type,
        "client_cert_file": cert_file,
        "client_key_file": key_file,
        "refund_notify_url": str(table.get("refund_notify_url") or _refund_notify_url(str(table["notify_url"]))),
    }


def _refund_notify_url(notify_url: str) -> str:
    """``…/wechatpay/v2/notify[/{merchant}]`` → ``…/wechatpay/v2/refund-notify[/{merchant}]``, the ledger's
    route for v2 refund results (the merchant's own path kept)."""
    head, marker, merchant = notify_url.rpartition("/wechatpay/v2/notify")
    if marker and (merchant == "" or (merchant.startswith("/") and "/" not in merchant[1:])):
        return f"{head}/wechatpay/v2/refund-notify{merchant}"
    return notify_url


def load_merchants(
    tables: list[dict[str, Any]], config_path: Path, api: str | None = None, https_only: bool = False
) -> dict[str, Merchant]:
    """The merchants (those on ``api`` when given), keyed by the id the ledger keeps their orders under.

    Two tables for one id (a 公众号 and a 小程序 sharing a mchid) are refused
    rather than one silently replacing the other.
    """
    merchants: dict[str, Merchant] = {}
    seen: dict[str, str] = {}
    for i, table in enumerate(tables):
        where = f"{config_path} [[merchants]] {table.get('name') or i + 1}"
        mchid = str(table.get("sub_mchid") or table.get("mchid") or "")
        if mchid in seen:
            raise MerchantConfigError(
                f"{where}: merchant {mchid} is configured twice (also in {seen[mchid]}); list its 公众号, 小程序 "
                "and apps as [[merchants.apps]] under one [[merchants]]"
            )
        seen[mchid] = where
        if api is not None and table.get("api", "v3") != api:
            continue
        merchant = load_merchant(table, config_path.parent, where, https_only)
        merchants[merchant.mchid] = merchant
    return merchants


def load_providers(tables: list[dict[str, Any]], config_path: Path, https_only: bool = False) -> dict[str, Merchant]:
    """``[[providers]]``: each service provider's keys, configured once, keyed by its ``mchid`` (sp_mchid).

    A table is a partner ``[[merchants]]`` table without ``sub_mchid``: ``mchid``, ``appid``, ``api``, the key
    files, and ``notify_url`` — each sub-merchant's is that URL with its ``sub_mchid`` after it.  Its
    sub-merchants are added through the API (``POST /v1/sub-merchants``), not here.
    """
    providers: dict[str, Merchant] = {}
    for i, table in enumerate(tables):
        where = f"{config_path} [[providers]] {table.get('name') or i + 1}"
        if table.get("sub_mchid"):
            raise MerchantConfigError(f"{where}: a provider has no `sub_mchid`; its sub-merchants are added by the API")
        merchant = load_merchant(
            {**table, "mode": "partner", "sub_mchid": "provider"}, config_path.parent, where, https_only
        )
        if merchant.account_mchid in providers:
            raise MerchantConfigError(f"{where}: provider {merchant.account_mchid} is configured twice")
        providers[merchant.account_mchid] = dataclasses.replace(merchant, sub_mchid="")
    return providers
