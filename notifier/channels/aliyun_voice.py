"""Aliyun voice service (语音服务, Dyvmsapi 2017-05-25, RPC style) channel adapter.

An alert is an interactive call (`IvrCall`): the text-to-speech template says who needs
help and where, then asks for a key: 按1我来处理, 按2转给下一位. A status update ("someone
is handling it") is a plain notification call (`SingleCallByTts`). The provider answers
with a CallId at once; what became of the call (answered, busy, no answer, the key
pressed) comes later in its VoiceReport push (notifier.provider_callbacks).

Like SendSms, a call request is not idempotent: an attempt that timed out after the
request went out may have rung, and its retry rings again. Unlike a second SMS, a second
call about an open emergency does no harm, so there is no lookup before a retry.
"""

from __future__ import annotations

import json
import logging

import httpx

from carewatch.clock import Clock, SystemClock
from carewatch.settings import Settings
from notifier.channels.aliyun_rpc import new_nonce, signed_params
from notifier.channels.aliyun_sms import interpret_response
from notifier.channels.base import Message, SendResult, out_id_for, post_to_provider, record_send
from notifier.channels.templates import VARIABLE_MAX_CHARS, fit_variable

log = logging.getLogger(__name__)

API_VERSION = "2017-05-25"
# The keys of the alert call and what each does (notifier.receipts acts on them).
DTMF_ACKNOWLEDGE = "1"  # 我来处理
DTMF_NEXT = "2"  # 转给下一位
# Variables of the alert call's TTS template: read out, so no link and no code.
ALERT_VARIABLES = ("elder_name", "address", "kind_label", "time")
UPDATE_VARIABLES = ("elder_name", "kind_label", "handler")


def tts_params(message: Message, names: tuple[str, ...]) -> str:
    """The template variables as JSON, each fitted like an SMS variable."""
    values = {
        name: fit_variable(name, message.params.get(name, "工作人员" if name == "handler" else ""))
        for name in names
    }
    assert all(len(v) <= VARIABLE_MAX_CHARS for v in values.values())
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


class AliyunVoiceChannel:
    name = "voice"

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
    ) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock or SystemClock()

    def request_params(self, message: Message) -> dict[str, str]:
        """The signed form parameters of one call request (fresh nonce and time)."""
        s = self._settings
        action: dict[str, str]
        if message.purpose == "alert":
            action = {
                "Action": "IvrCall",
                "CalledNumber": message.address,
                "StartCode": s.aliyun_voice_tts_alert,
                "StartTtsParams": tts_params(message, ALERT_VARIABLES),
                "MenuKeyMap": json.dumps(
                    [
                        {"Key": DTMF_ACKNOWLEDGE, "Code": s.aliyun_voice_tts_key1},
                        {"Key": DTMF_NEXT, "Code": s.aliyun_voice_tts_key2},
                    ],
                    separators=(",", ":"),
                ),
                "PlayTimes": "2",
                "Timeout": "10000",  # ms to wait for a key after the prompt
            }
        else:
            action = {
                "Action": "SingleCallByTts",
                "CalledNumber": message.address,
                "TtsCode": s.aliyun_voice_tts_update,
                "TtsParam": tts_params(message, UPDATE_VARIABLES),
                "PlayTimes": "2",
            }
        if s.aliyun_voice_show_number:
            action["CalledShowNumber"] = s.aliyun_voice_show_number
        action["OutId"] = out_id_for(message.idempotency_key)
        return signed_params(
            "POST",
            action,
            access_key_id=s.aliyun_access_key_id,
            access_key_secret=s.aliyun_access_key_secret.get_secret_value(),
            version=API_VERSION,
            epoch_ms=self._clock.now_ms(),
            nonce=new_nonce(),
        )

    async def send(self, message: Message) -> SendResult:
        params = self.request_params(message)
        result = await post_to_provider(
            self._client,
            self._settings.aliyun_voice_endpoint,
            self._settings.provider_timeout_s,
            interpret_call,
            data=params,
        )
        return record_send(log, self.name, "voice", message, result, id_field="call_id")

    async def aclose(self) -> None:
        """Nothing to release: the shared HTTP client belongs to the caller."""


# Call errors caused by the request itself: retrying gets the same answer.
PERMANENT_CALL_CODES = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.INVALID_PARAMETERS",
        "isv.TTS_TEMPLATE_ILLEGAL",
        "isv.DISPLAY_NUMBER_ILLEGAL",
    }
)


def interpret_call(status_code: int, body: bytes) -> SendResult:
    """Map one IvrCall / SingleCallByTts answer to a SendResult (pure): the same JSON
    envelope as SendSms, with CallId instead of BizId."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and status_code == 200 and data.get("Code") == "OK":
        return SendResult(ok=True, provider_message_id=str(data.get("CallId") or "") or None)
    result = interpret_response(status_code, body)
    code = str(data.get("Code", "")) if isinstance(data, dict) else ""
    if code in PERMANENT_CALL_CODES:
        return SendResult(ok=False, retryable=False, error=result.error)
    return result
