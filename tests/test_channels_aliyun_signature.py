"""Aliyun RPC signature v1 and SendSms answer mapping: pure functions."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import pytest
from hypothesis import given

from notifier.channels.aliyun_rpc import (
    format_timestamp,
    parse_timestamp,
    percent_encode,
    sign,
    signed_params,
    string_to_sign,
    verify,
)
from notifier.channels.aliyun_sms import (
    PERMANENT_CODES,
    DeliveryQueryError,
    interpret_details,
    interpret_response,
    out_id_for,
)


def test_signature_matches_aliyun_rpc_documentation_example() -> None:
    # The worked example of Aliyun's RPC signature documentation (ECS DescribeRegions).
    params = {
        "Timestamp": "2016-02-23T12:46:24Z",
        "Format": "XML",
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "Version": "2014-05-26",
        "SignatureVersion": "1.0",
    }
    assert string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26"
    )
    assert sign("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_signature_matches_sms_documentation_example() -> None:
    # The SendSms example of the SMS service's HTTP signing documentation (UTF-8 SignName).
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert sign("GET", params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_percent_encoding_follows_aliyun_rules() -> None:
    assert percent_encode("a b") == "a%20b"
    assert percent_encode("*") == "%2A"
    assert percent_encode("~-_.") == "~-_."
    assert percent_encode("+/=&:") == "%2B%2F%3D%26%3A"
    assert percent_encode("养老") == "%E5%85%BB%E8%80%81"


@given(
    params=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=6),
    secret=st.text(min_size=1, max_size=16),
)
def test_sign_then_verify_and_any_tampering_fails(params: dict[str, str], secret: str) -> None:
    signed = {**params, "Signature": sign("POST", params, secret)}
    assert verify("POST", signed, secret)
    assert not verify("GET", signed, secret)
    assert not verify("POST", signed, secret + "x")
    assert not verify("POST", {**signed, "NotAGeneratedKey": "1"}, secret)  # keys are <= 8 chars


def test_signed_params_carry_the_common_parameters() -> None:
    params = signed_params(
        "POST",
        {"Action": "SendSms", "PhoneNumbers": "13800138000"},
        access_key_id="id",
        access_key_secret="secret",
        version="2017-05-25",
        epoch_ms=1_764_000_000_123,
        nonce="n1",
    )
    assert params["Timestamp"] == "2025-11-24T16:00:00Z"
    assert params["SignatureMethod"] == "HMAC-SHA1"
    assert params["SignatureVersion"] == "1.0"
    assert params["Format"] == "JSON"
    assert verify("POST", params, "secret")
    assert parse_timestamp(format_timestamp(1_764_000_000_000)) == 1_764_000_000_000


def test_answers_map_to_retry_decisions() -> None:
    ok = interpret_response(200, b'{"Code":"OK","Message":"OK","BizId":"123^0","RequestId":"r"}')
    assert ok.ok and ok.provider_message_id == "123^0"
    illegal = interpret_response(
        200, '{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"非法手机号"}'.encode()
    )
    assert not illegal.ok and not illegal.retryable
    assert illegal.error is not None and "isv.MOBILE_NUMBER_ILLEGAL" in illegal.error
    assert "isv.INVALID_PARAMETERS" in PERMANENT_CODES
    for body in (
        b'{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"limit"}',
        b'{"Code":"Throttling.User","Message":"flow control"}',
    ):
        result = interpret_response(200 if b"isv" in body else 400, body)
        assert not result.ok and result.retryable
    assert interpret_response(503, b'{"Code":"isv.MOBILE_NUMBER_ILLEGAL"}').retryable
    assert interpret_response(502, b"<html>bad gateway</html>").retryable


def test_out_id_is_the_key_or_a_stable_hash_of_a_long_key() -> None:
    assert out_id_for("n:42:sms:13800138000") == "n:42:sms:13800138000"
    long_key = "k" * 200
    assert out_id_for(long_key) == out_id_for(long_key)
    assert len(out_id_for(long_key)) == 64


def test_receipts_map_send_status() -> None:
    def details(*rows: tuple[int, str, str]) -> bytes:
        dtos = [{"SendStatus": st, "ErrCode": code, "SendDate": sent} for st, code, sent in rows]
        body = {
            "Code": "OK",
            "TotalCount": len(dtos),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": dtos},
        }
        return json.dumps(body).encode()

    failed = interpret_details(
        200, details((3, "DELIVERED", "2025-11-24 08:00:00"), (2, "MK:0001", "2025-11-24 09:00:00"))
    )
    assert failed is not None and (failed.status, failed.error_code) == ("failed", "MK:0001")
    waiting = interpret_details(200, details((1, "", "2025-11-24 08:00:00")))
    assert waiting is not None and waiting.status == "pending"
    assert interpret_details(200, details()) is None
    with pytest.raises(DeliveryQueryError, match=r"isv\.INVALID_PARAMETERS"):
        interpret_details(200, b'{"Code":"isv.INVALID_PARAMETERS","Message":"x"}')
    with pytest.raises(DeliveryQueryError, match="http 503"):
        interpret_details(503, b"<html/>")
