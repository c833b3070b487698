"""Every pinned vector of docs/wechatpay-protocol.md §11 that concerns APIv3 signing and AEAD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.wechatpay import signing
from tests.unit import vectors as v

KEY = signing.load_private_key((Path(__file__).parent / "vectors" / "wechatpay_go_testing_key.pem").read_bytes())
PUBLIC = KEY.public_key()
NONCE = "593BEC0C930BF1AFEB40B4A08C8FB242"


def test_v1_post_request_signature_and_authorization_header() -> None:
    header = signing.build_authorization(
        signing.Signer("1900000001", "D7CE59D1F522D701", KEY),
        "POST",
        "/v3/pay/transactions/jsapi",
        v.V1_BODY.encode(),
        "1700000000",
        NONCE,
    )
    assert header == (
        f'WECHATPAY2-SHA256-RSA2048 mchid="1900000001",nonce_str="{NONCE}",signature="{v.V1_SIGNATURE}",'
        'timestamp="1700000000",serial_no="D7CE59D1F522D701"'
    )
    parsed = signing.parse_authorization(header)
    assert parsed.signature == v.V1_SIGNATURE and parsed.serial_no == "D7CE59D1F522D701"


def test_v2_get_request_signature_over_an_empty_body() -> None:
    message = signing.request_message(
        "GET",
        "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1900000001",
        "1700000000",
        NONCE,
        b"",
    )
    assert message.endswith(b"\n\n")
    assert signing.sign(KEY, message) == v.V2_SIGNATURE


def test_v3_response_signatures() -> None:
    body = b'{"prepay_id":"wx201410272009395522657a690389285100"}'
    nonce = "c5ac7061fccab6bf3e254dcf98995b8c"
    assert signing.sign(KEY, signing.response_message("1700000001", nonce, body)) == v.V3_SIGNATURE
    assert signing.sign(KEY, signing.response_message("1700000001", nonce, b"")) == v.V3_EMPTY_SIGNATURE
    assert signing.verify(PUBLIC, signing.response_message("1700000001", nonce, body), v.V3_SIGNATURE)
    assert not signing.verify(PUBLIC, signing.response_message("1700000001", nonce, body + b" "), v.V3_SIGNATURE)


def test_v4_jsapi_pay_sign_and_v5_app_sign() -> None:
    args = ("wxd678efh567hg6787", "1414561699", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
    assert signing.jsapi_pay_sign(KEY, *args, "prepay_id=wx201410272009395522657a690389285100") == v.V4_PAY_SIGN
    assert signing.app_pay_sign(KEY, *args, "wx201410272009395522657a690389285100") == v.V5_APP_SIGN


def v6_body() -> bytes:
    resource = {
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": v.V6_CIPHERTEXT,
        "associated_data": "transaction",
        "nonce": "fdasflkja484",
    }
    envelope = {
        "id": "EV-2018022511223320873",
        "create_time": "2023-11-15T06:13:21+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def test_v6_callback_verifies_and_decrypts() -> None:
    body = v6_body()
    message = signing.response_message("1700000002", "fdasfwejklsdjfklsadjklfjsadlkfj1", body)
    assert signing.verify(PUBLIC, message, v.V6_SIGNATURE)
    plaintext = signing.aead_decrypt(
        b"a12d3924fd499edac8a5efc7b2e1f3d5", "fdasflkja484", "transaction", v.V6_CIPHERTEXT
    )
    assert plaintext.decode() == v.V6_PLAINTEXT
    assert (
        signing.aead_encrypt(b"a12d3924fd499edac8a5efc7b2e1f3d5", "fdasflkja484", "transaction", plaintext)
        == v.V6_CIPHERTEXT
    )


@pytest.mark.parametrize(
    "signature",
    ["WECHATPAY/SIGNTEST/9NJCZyEkV0PY7ynKqAW6zY3C", "not base64 !!", "", v.V3_SIGNATURE],
)
def test_probes_and_garbage_are_refused_without_an_exception(signature: str) -> None:
    assert signing.verify(PUBLIC, signing.response_message("1700000002", "n", v6_body()), signature) is False


def test_a_wrong_key_or_tampered_ciphertext_is_a_signature_error() -> None:
    with pytest.raises(signing.SignatureError):
        signing.aead_decrypt(b"0" * 32, "fdasflkja484", "transaction", v.V6_CIPHERTEXT)
    tampered = ("A" if v.V6_CIPHERTEXT[0] != "A" else "B") + v.V6_CIPHERTEXT[1:]
    with pytest.raises(signing.SignatureError):
        signing.aead_decrypt(b"a12d3924fd499edac8a5efc7b2e1f3d5", "fdasflkja484", "transaction", tampered)


@pytest.mark.parametrize(
    "header",
    ["Bearer x", 'WECHATPAY2-SHA256-RSA2048 mchid="1"', "WECHATPAY2-SHA256-RSA2048 garbage"],
)
def test_malformed_authorization_headers(header: str) -> None:
    with pytest.raises(signing.SignatureError):
        signing.parse_authorization(header)
