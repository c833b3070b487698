"""Settings: ``zhangben.toml`` (path in ``ZHANGBEN_CONFIG``), overridden by the environment.

Only what every command needs lives here; the WeChat Pay merchant settings
(secrets read from files) are loaded and validated by the adapter.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.persistence import DEFAULT_DATABASE_URL
from adapters.secretbox import DataKeyError, read_keyring
from adapters.wechatpay import miniprogram, oauth
from domain.errors import InvalidInput
from domain.partitions import check_count

DEFAULT_CONFIG = "zhangben.toml"
DEFAULT_WECHATPAY_BASE_URL = "https://api.mch.weixin.qq.com"


class SettingsError(Exception):
    """A configuration that cannot be used; the message names the file and the setting."""


@dataclass(frozen=True)
class AdmissionLimits:
    """What one HTTP worker takes on at once, and how long a request may wait for its turn (``[admission]``;
    api/admission.py, docs/operations.md "Load past capacity")."""

    max_in_flight: int = 12  # requests worked on at once (below the event store's pool of 15 connections)
    queue_seconds: float = 0.25  # the longest a merchant request waits for its turn; past it: 503, Retry-After
    callback_wait_seconds: float = 2.0  # the longest a WeChat callback or a payer's page waits (WeChat waits 5 s)
    reserve: int = 4  # slots only callbacks and payer pages may take


@dataclass(frozen=True)
class Cell:
    """A PostgreSQL cluster the partitions live on (``[[cells]]``): its name and URL (every node, or a proxy).

    The URL is never printed (``repr=False``): it holds the password."""

    name: str
    url: str = field(repr=False)


MAIN_CELL = "main"  # the deployment's one database when no cells are named; with cells, the first (the directory's)
CELL_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class Settings:
    config_path: Path
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # holds the password: never printed
    wechatpay_base_url: str = DEFAULT_WECHATPAY_BASE_URL
    wechat_api_base_url: str = miniprogram.DEFAULT_BASE_URL
    # API v2 refunds (/secapi/…) over mutual TLS: the same host at WeChat; the sandbox's TLS listener in development
    wechatpay_secapi_base_url: str | None = None
    # extra trust for WeChat Pay's TLS certificate (the sandbox's own CA in development); None: the system's
    wechatpay_ca_file: str | None = None
    # webhook retries run this many times faster (tests and the tour only; 1 in production)
    webhooks_time_factor: float = 1.0
    # 公众号 web authorisation (snsapi_base): the page the payer's browser is sent to
    wechat_open_base_url: str = oauth.DEFAULT_OPEN_BASE_URL
    # proxies whose X-Forwarded-For / X-Real-IP name the payer (H5's payer_client_ip); nobody else's are read
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # `[callbacks] allowed_networks`: WeChat's notifications are taken only from these (seen through
    # trusted_proxies); empty: from anywhere (the signature is what proves them: docs/wechatpay.md)
    callback_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # the key that signs payer links (cashier_url); None: payer pages are off.  Never printed (repr=False).
    cashier_key: bytes | None = field(default=None, repr=False)
    # the keyring that seals the secrets kept in the database (adapters/secretbox.py); None: none are kept
    data_key_file: Path | None = None
    # where payers reach the ledger (https://pay.example.com); None: the base URL of the create request
    public_base_url: str | None = None
    merchants: list[dict[str, Any]] = field(default_factory=list)
    # `[[providers]]`: service providers (服务商) whose sub-merchants are added through the API
    providers: list[dict[str, Any]] = field(default_factory=list)
    admission: AdmissionLimits = AdmissionLimits()
    # `[partitioning] partitions`: the deployment's logical partitions, fixed once chosen (docs/scale-out.md)
    partitions: int = 1
    # `[[cells]]`: the PostgreSQL clusters partitions are spread over; the first holds the directory
    # (docs/scale-out.md).  None named: the one database at database_url, called "main".
    cells: tuple[Cell, ...] = ()

    def cell_names(self) -> list[str]:
        return [cell.name for cell in self.cells] or [MAIN_CELL]

    def cell_name(self, cell: str) -> str:
        """``main`` (a partition placed before cells were named) is the first cell."""
        return self.cell_names()[0] if cell == MAIN_CELL else cell

    def database_of(self, cell: str) -> str:
        """The URL of ``cell`` (``main``: the first, where the directory is); one that is not configured is refused."""
        if cell == MAIN_CELL:
            return self.database_url
        for named in self.cells:
            if named.name == cell:
                return named.url
        raise SettingsError(
            f"{self.config_path}: a partition lives on cell {cell!r}, which has no [[cells]] table "
            f"(cells: {', '.join(self.cell_names())})"
        )

    def merchant_ids(self, api: str | None = None) -> list[str]:
        """The ids orders are kept under: ``sub_mchid`` for a partner's sub-merchant, else ``mchid``.

        ``api="v3"`` keeps only the merchants on that API.
        """
        return [
            str(m.get("sub_mchid") or m.get("mchid"))
            for m in self.merchants
            if api is None or m.get("api", "v3") == api
        ]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    path = Path(env.get("ZHANGBEN_CONFIG", DEFAULT_CONFIG))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    elif "ZHANGBEN_CONFIG" in env:
        raise SettingsError(f"ZHANGBEN_CONFIG names {path}, which does not exist")
    merchants = data.get("merchants", [])
    if not isinstance(merchants, list) or not all(isinstance(m, dict) for m in merchants):
        raise SettingsError(f"{path}: `merchants` must be a list of [[merchants]] tables")
    for i, merchant in enumerate(merchants):
        if not merchant.get("mchid"):
            raise SettingsError(f"{path}: [[merchants]] number {i + 1} has no mchid")
    providers = data.get("providers", [])
    if not isinstance(providers, list) or not all(isinstance(p, dict) and p.get("mchid") for p in providers):
        raise SettingsError(f"{path}: `providers` must be a list of [[providers]] tables, each with its mchid")
    cells = _cells(path, data.get("cells", []))
    database_url = (
        env.get("ZHANGBEN_DATABASE_URL")
        or _database_url_file(path, env.get("ZHANGBEN_DATABASE_URL_FILE") or data.get("database_url_file"))
        or data.get("database_url")
    )
    if cells and database_url and database_url != cells[0].url:
        raise SettingsError(
            f"{path}: [[cells]] are named, and so is another database URL: the directory lives on the first cell "
            f"({cells[0].name}); leave database_url and ZHANGBEN_DATABASE_URL unset"
        )
    return Settings(
        config_path=path,
        database_url=cells[0].url if cells else database_url or DEFAULT_DATABASE_URL,
        wechatpay_base_url=env.get("ZHANGBEN_WECHATPAY_BASE_URL")
        or data.get("wechatpay_base_url")
        or DEFAULT_WECHATPAY_BASE_URL,
        wechat_api_base_url=env.get("ZHANGBEN_WECHAT_API_BASE_URL")
        or data.get("wechat_api_base_url")
        or miniprogram.DEFAULT_BASE_URL,
        wechatpay_secapi_base_url=env.get("ZHANGBEN_WECHATPAY_SECAPI_BASE_URL")
        or data.get("wechatpay_secapi_base_url"),
        wechatpay_ca_file=_relative(path, env.get("ZHANGBEN_WECHATPAY_CA_FILE") or data.get("wechatpay_ca_file")),
        webhooks_time_factor=_factor(env.get("ZHANGBEN_WEBHOOKS_TIME_FACTOR") or data.get("webhooks_time_factor")),
        wechat_open_base_url=env.get("ZHANGBEN_WECHAT_OPEN_BASE_URL")
        or data.get("wechat_open_base_url")
        or oauth.DEFAULT_OPEN_BASE_URL,
        trusted_proxies=_networks(path, env.get("ZHANGBEN_TRUSTED_PROXIES"), data.get("trusted_proxies")),
        callback_networks=_networks(
            path,
            env.get("ZHANGBEN_CALLBACK_ALLOWED_NETWORKS"),
            _table(path, data, "callbacks").get("allowed_networks"),
            "[callbacks] allowed_networks",
        ),
        cashier_key=_cashier_key(path, env.get("ZHANGBEN_CASHIER_KEY_FILE") or data.get("cashier_key_file")),
        data_key_file=_data_key_file(path, env.get("ZHANGBEN_DATA_KEY_FILE") or data.get("data_key_file")),
        public_base_url=(env.get("ZHANGBEN_PUBLIC_BASE_URL") or data.get("public_base_url") or "").rstrip("/") or None,
        merchants=merchants,
        providers=providers,
        admission=_admission(path, data.get("admission", {})),
        partitions=_partitions(path, data.get("partitioning", {})),
        cells=cells,
    )


def _cells(config_path: Path, tables: Any) -> tuple[Cell, ...]:
    """``[[cells]]``: each a ``name`` and a PostgreSQL ``url`` or ``url_file`` (a secret's file), names unique."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SettingsError(f"{config_path}: `cells` must be a list of [[cells]] tables")
    cells: list[Cell] = []
    for i, table in enumerate(tables):
        unknown = sorted(set(table) - {"name", "url", "url_file"})
        if unknown:
            raise SettingsError(f"{config_path}: [[cells]] number {i + 1} has no setting {unknown[0]!r}")
        name = table.get("name")
        if not isinstance(name, str) or not CELL_NAME.fullmatch(name):
            raise SettingsError(
                f"{config_path}: [[cells]] number {i + 1} needs a name of lower-case letters, digits and '-' "
                "(at most 32, a letter first)"
            )
        if name in [c.name for c in cells]:
            raise SettingsError(f"{config_path}: two [[cells]] are named {name!r}")
        url = table.get("url") or _database_url_file(config_path, table.get("url_file"))
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise SettingsError(f"{config_path}: cell {name!r} needs a PostgreSQL url or url_file")
        cells.append(Cell(name, url))
    return tuple(cells)


def _partitions(config_path: Path, table: Any) -> int:
    """``[partitioning] partitions = N``: 1 … 1000 (SQLite holds one: it is one file)."""
    if not isinstance(table, dict):
        raise SettingsError(f"{config_path}: [partitioning] must be a table")
    unknown = sorted(set(table) - {"partitions"})
    if unknown:
        raise SettingsError(f"{config_path}: [partitioning] has no setting {unknown[0]!r}; it has partitions")
    try:
        return check_count(table.get("partitions", 1))
    except InvalidInput as exc:
        raise SettingsError(f"{config_path}: [partitioning] {exc}") from None


def _admission(config_path: Path, table: Any) -> AdmissionLimits:
    """``[admission]``: positive numbers only, each checked (a zero limit would refuse every request)."""
    if not isinstance(table, dict):
        raise SettingsError(f"{config_path}: [admission] must be a table")
    known = [f.name for f in dataclasses.fields(AdmissionLimits)]
    for name, value in table.items():
        if name not in known:
            raise SettingsError(f"{config_path}: [admission] has no setting {name!r}; it has {', '.join(known)}")
        whole, least = name in ("max_in_flight", "reserve"), 0 if name == "reserve" else 1
        number = isinstance(value, int if whole else (int, float)) and not isinstance(value, bool)
        if not number or (value < least if whole else value <= 0):
            kind = f"a whole number from {least}" if whole else "a number of seconds above 0"
            raise SettingsError(f"{config_path}: [admission] {name} must be {kind}, not {value!r}")
    return AdmissionLimits(**table)


def _database_url_file(config_path: Path, value: str | None) -> str | None:
    """The database URL read from a file (a Docker or systemd secret), so its password is in no environment."""
    path_text = _relative(config_path, value)
    if path_text is None:
        return None
    try:
        url = Path(path_text).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"database_url_file = {path_text}: {exc.strerror}") from None
    if not url:
        raise SettingsError(f"database_url_file = {path_text} is empty")
    return url


def _cashier_key(config_path: Path, value: str | None) -> bytes | None:
    """The payer links' signing key: a file of at least 32 bytes, readable by its owner only."""
    path_text = _relative(config_path, value)
    if path_text is None:
        return None
    path = Path(path_text)
    try:
        mode = path.stat().st_mode
        key = path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(f"cashier_key_file = {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SettingsError(f"cashier_key_file = {path} is readable by group or others; run `chmod 600 {path}`")
    if len(key) < 32:
        raise SettingsError(f"cashier_key_file = {path} must hold at least 32 bytes (it holds {len(key)})")
    return key


def _data_key_file(config_path: Path, value: str | None) -> Path | None:
    """The data keyring's file, checked now (exists, owner-only, well formed) so a mistake is one line at start."""
    path_text = _relative(config_path, value)
    if path_text is None:
        return None
    try:
        read_keyring(Path(path_text))
    except DataKeyError as exc:
        raise SettingsError(str(exc)) from None
    return Path(path_text)


def _table(path: Path, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: `{name}` must be a table ([{name}])")
    return table


def _networks(
    path: Path, from_env: str | None, from_file: object, name: str = "trusted_proxies"
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``trusted_proxies`` (or ``name``): addresses or CIDR blocks, a list in the file or comma-separated in the
    environment."""
    if from_env:
        items: list[object] = [part for part in from_env.split(",") if part.strip()]
    elif from_file is None:
        return ()
    elif isinstance(from_file, list):
        items = list(from_file)
    else:
        raise SettingsError(f'{path}: `{name}` must be a list, e.g. ["10.0.0.0/8", "127.0.0.1"]')
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address or CIDR block") from None
    return tuple(networks)


def _factor(value: object) -> float:
    if value in (None, ""):
        return 1.0
    try:
        factor = float(str(value))
    except ValueError:
        raise SettingsError(f"webhooks_time_factor must be a positive number, not {value!r}") from None
    if factor <= 0:
        raise SettingsError(f"webhooks_time_factor must be a positive number, not {value!r}")
    return factor


def _relative(config_path: Path, value: str | None) -> str | None:
    """A path in the config is relative to the config file, as the merchants' key files are."""
    if not value:
        return None
    path = Path(value)
    return str(path if path.is_absolute() else config_path.parent / path)
