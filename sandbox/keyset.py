"""``zhangben keys init``: a development keyset and the ``zhangben.toml`` that uses it.

Everything WeChat Pay would hand a merchant is generated here, with the same
shapes: RSA-2048 merchant API keys with a certificate and its serial, 32-byte
APIv3 keys, 32-character v2 keys, an appsecret; and for the sandbox, the
platform key with its certificate and a separate "WeChat Pay public key"
with a ``PUB_KEY_ID_…`` id.  Files are written 0600; existing files are kept,
so running it twice changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from adapters.secretbox import write_new_keyring
from adapters.wechatpay.signing import certificate_serial


@dataclass(frozen=True)
class DemoMerchant:
    label: str
    mchid: str
    appid: str
    mode: str
    api: str
    sub_mchid: str = ""
    sub_appid: str = ""
    v2_sign_type: str = "HMAC-SHA256"
    # [[merchants.apps]]: (appid, channels) of more apps under the same mchid, each with its own appsecret
    apps: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def key(self) -> str:
        """The id its orders are kept under (and its partition placed by): the sub-merchant's, else the mchid."""
        return self.sub_mchid or self.mchid


# The direct merchant's main app is its 小程序 (and Native, H5, app); its 公众号 pays for JSAPI.
DIRECT_OA_APPID = "wx5f6e7d8c9b0a1f2e"
DIRECT = DemoMerchant(
    "direct", "1900000001", "wxd678efh567hg6787", "direct", "v3", apps=((DIRECT_OA_APPID, ("jsapi",)),)
)
PARTNER = DemoMerchant(
    "partner", "1900000100", "wx8888888888888888", "partner", "v3", "1900000109", "wxd9b1c2e3f4a5b6c7"
)
# A v2 merchant signing with MD5 (seed 004's mini-program) and a v2 service provider's sub-merchant with HMAC-SHA256.
V2 = DemoMerchant("v2", "1900000002", "wxd930ea5d5a258f4f", "direct", "v2", v2_sign_type="MD5")
V2_PARTNER = DemoMerchant(
    "v2-partner", "1900000200", "wx2421b1c4370ec43b", "partner", "v2", "1900000209", "wx5a6b7c8d9e0f1a2b"
)
MERCHANTS = (DIRECT, PARTNER, V2, V2_PARTNER)
PUBLIC_KEY_ID = "PUB_KEY_ID_0119000000012026112200000001"


def _write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 unless it exists (then leave it alone)."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _rsa_key(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_secret(
            path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def _self_signed(key: rsa.RSAPrivateKey, common_name: str, years: int = 5) -> bytes:
    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zhangben sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(8), "big") | (1 << 63))
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365 * years))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(path: Path, key: rsa.RSAPrivateKey, common_name: str) -> str:
    """A self-signed certificate for ``key``; returns its serial as WeChat writes it."""
    if not path.exists():
        _write_secret(path, _self_signed(key, common_name))
    return certificate_serial(path.read_bytes())


def _tls_files(folder: Path) -> None:
    """The sandbox's HTTPS identity for the mutual-TLS listener: a CA the ledger trusts and a 127.0.0.1 certificate.

    At WeChat the server certificate is publicly trusted; offline, the ledger
    is told to trust this CA (``wechatpay_ca_file``) and nothing else changes.
    """
    ca_path, cert_path, key_path = folder / "tls_ca.pem", folder / "tls_cert.pem", folder / "tls_key.pem"
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return
    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zhangben sandbox TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_secret(ca_path, ca.public_bytes(pem))
    _write_secret(cert_path, cert.public_bytes(pem))
    _write_secret(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def secapi_url(sandbox_url: str) -> str:
    """The sandbox's mutual-TLS listener: https on the port after the sandbox's own."""
    parts = urlsplit(sandbox_url)
    return f"https://{parts.hostname}:{(parts.port or 80) + 1}"


def new_certificate(common_name: str) -> tuple[bytes, bytes, str]:
    """A fresh key and self-signed certificate in memory: (key PEM, certificate PEM, serial)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert_pem = _self_signed(key, common_name)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert_pem, certificate_serial(cert_pem)


def _random_text(path: Path, length: int, alphabet: str) -> None:
    _write_secret(path, "".join(secrets.choice(alphabet) for _ in range(length)).encode())


ALNUM = string.ascii_letters + string.digits


def init_keyset(
    keys_dir: Path, config_path: Path, ledger_url: str, sandbox_url: str, tls_url: str | None = None
) -> list[str]:
    """Write the keyset and, if absent, the config; return what was done, line by line.

    ``tls_url`` is the sandbox's mutual-TLS listener (default: the port after the sandbox's).
    """
    done: list[str] = []
    tls_url = tls_url or secapi_url(sandbox_url)
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    merchant_tables = []
    for merchant in MERCHANTS:
        folder = keys_dir / merchant.mchid
        key = _rsa_key(folder / "apiclient_key.pem")
        serial = _certificate(folder / "apiclient_cert.pem", key, f"{merchant.mchid} merchant API certificate")
        _random_text(folder / "apiv3_key", 32, ALNUM)
        _random_text(folder / "v2_key", 32, ALNUM)
        _random_text(folder / "appsecret", 32, string.hexdigits.lower()[:16])
        for appid, _ in merchant.apps:
            _random_text(folder / f"appsecret_{appid}", 32, string.hexdigits.lower()[:16])
        merchant_tables.append(_merchant_toml(merchant, folder, serial, keys_dir, ledger_url))
        if merchant is PARTNER:  # the same service provider, whose further sub-merchants are added by the API
            merchant_tables.append(_provider_toml(merchant, folder, serial, keys_dir, ledger_url))
        done.append(f"merchant {merchant.mchid} ({merchant.label}): key, certificate {serial}, APIv3 key, v2 key")
    platform = keys_dir / "wechatpay"
    platform_key = _rsa_key(platform / "platform_key.pem")
    platform_serial = _certificate(platform / "platform_cert.pem", platform_key, "Tenpay.com Root CA (sandbox)")
    pub_private = _rsa_key(platform / "pub_key_private.pem")
    pub_path = platform / "pub_key.pem"
    _write_secret(
        pub_path,
        pub_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    _tls_files(platform)
    _random_text(keys_dir / "cashier_key", 43, ALNUM)  # signs the payers' links (cashier_url)
    write_new_keyring(keys_dir / "data_key")  # seals the secrets the ledger keeps in its database
    done.append(f"sandbox platform certificate {platform_serial}, WeChat Pay public key {PUBLIC_KEY_ID}")
    done.append(f"sandbox TLS certificate for {tls_url} (v2 refunds, mutual TLS)")
    if config_path.exists():
        done.append(f"{config_path} exists: left as it is")
    else:
        config_path.write_text(_config_toml(merchant_tables, keys_dir, sandbox_url, tls_url), encoding="utf-8")
        done.append(f"wrote {config_path}")
    return done


def _merchant_toml(merchant: DemoMerchant, folder: Path, serial: str, keys_dir: Path, ledger_url: str) -> str:
    key = merchant.sub_mchid or merchant.mchid  # the merchant in the path: its refusals are its own (docs/wechatpay.md)
    notify = f"{ledger_url}/wechatpay/{merchant.api}/notify/{key}"
    lines = [
        "[[merchants]]",
        f'name = "{merchant.label}"',
        f'mchid = "{merchant.mchid}"',
        f'appid = "{merchant.appid}"',
        f'mode = "{merchant.mode}"',
        f'api = "{merchant.api}"',
        f'notify_url = "{notify}"',
    ]
    if merchant.mode == "partner":
        lines += [
            f'sp_mchid = "{merchant.mchid}"',
            f'sp_appid = "{merchant.appid}"',
            f'sub_mchid = "{merchant.sub_mchid}"',
            f'sub_appid = "{merchant.sub_appid}"',
        ]
    lines += _v3_key_lines(folder, serial, keys_dir)
    lines += [
        f'v2_key_file = "{folder / "v2_key"}"',
        f'v2_sign_type = "{merchant.v2_sign_type}"',
        f'client_cert_file = "{folder / "apiclient_cert.pem"}"',
        f'client_key_file = "{folder / "apiclient_key.pem"}"',
        f'appsecret_file = "{folder / "appsecret"}"',
    ]
    if merchant.api == "v2":
        lines += [
            f'refund_notify_url = "{ledger_url}/wechatpay/v2/refund-notify/{key}"',
            "# Native mode 1's 扫码回调URL: set in the merchant platform at WeChat; the sandbox reads it here",
            f'native_callback_url = "{ledger_url}/wechatpay/v2/native-callback"',
        ]
    for appid, channels in merchant.apps:  # last: every key after [[merchants.apps]] belongs to the app
        lines += [
            "[[merchants.apps]]",
            f'appid = "{appid}"',
            f"channels = {json.dumps(list(channels))}",
            f'appsecret_file = "{folder / f"appsecret_{appid}"}"',
        ]
    return "\n".join(lines) + "\n"


def _v3_key_lines(folder: Path, serial: str, keys_dir: Path) -> list[str]:
    """The API certificate, its key, the APIv3 key and WeChat's public key: a merchant's or a provider's."""
    return [
        f'private_key_file = "{folder / "apiclient_key.pem"}"',
        f'cert_file = "{folder / "apiclient_cert.pem"}"',
        f'cert_serial_no = "{serial}"',
        f'apiv3_key_file = "{folder / "apiv3_key"}"',
        f'platform_public_key_file = "{keys_dir / "wechatpay" / "pub_key.pem"}"',
        f'public_key_id = "{PUBLIC_KEY_ID}"',
    ]


def _provider_toml(merchant: DemoMerchant, folder: Path, serial: str, keys_dir: Path, ledger_url: str) -> str:
    """The provider's keys once, as ``[[providers]]``: each sub-merchant added through the API
    (``POST /v1/sub-merchants``) is served with them, its notify path ``…/notify/{sub_mchid}``."""
    return (
        "\n".join(
            [
                "# A service provider (服务商): its sub-merchants are added through the API, not here (docs/wechatpay.md)",
                "[[providers]]",
                f'name = "{merchant.label} provider"',
                f'mchid = "{merchant.mchid}"',
                f'appid = "{merchant.appid}"',
                f'api = "{merchant.api}"',
                f'notify_url = "{ledger_url}/wechatpay/{merchant.api}/notify"',
                *_v3_key_lines(folder, serial, keys_dir),
                f'appsecret_file = "{folder / "appsecret"}"',
            ]
        )
        + "\n"
    )


def _config_toml(merchant_tables: list[str], keys_dir: Path, sandbox_url: str, tls_url: str) -> str:
    platform = keys_dir / "wechatpay"
    return "\n".join(
        [
            "# zhangben development configuration, written by `zhangben keys init`.",
            "# Secrets live in the files named here (mode 0600), never in this file.",
            'database_url = "sqlite:///var/zhangben.db"',
            f'wechatpay_base_url = "{sandbox_url}"',
            f'wechat_api_base_url = "{sandbox_url}"  # the sandbox serves jscode2session too',
            f'wechat_open_base_url = "{sandbox_url}"  # and the 公众号 web authorisation page',
            "# API v2 refunds go over mutual TLS: the sandbox's TLS listener, and the CA that signed its certificate",
            f'wechatpay_secapi_base_url = "{tls_url}"',
            f'wechatpay_ca_file = "{platform / "tls_ca.pem"}"',
            "# signs the payers' links (cashier_url): any 32+ random bytes, the same file for every worker",
            f'cashier_key_file = "{keys_dir / "cashier_key"}"',
            "# seals the secrets kept in the database (webhook secrets, mini-program session keys): a keyring,",
            "# the first key seals; `zhangben keys rotate-data-key` adds a new one and seals everything again",
            f'data_key_file = "{keys_dir / "data_key"}"',
            "",
            *merchant_tables,
            "# Read by the sandbox only; absent in production.",
            "[sandbox]",
            f'platform_private_key_file = "{platform / "platform_key.pem"}"',
            f'platform_cert_file = "{platform / "platform_cert.pem"}"',
            f'public_key_id = "{PUBLIC_KEY_ID}"',
            f'public_key_private_key_file = "{platform / "pub_key_private.pem"}"',
            'mode = "both"',
            f'tls_cert_file = "{platform / "tls_cert.pem"}"',
            f'tls_key_file = "{platform / "tls_key.pem"}"',
            'database = "var/sandbox.db"',
            "",
        ]
    )
