"""One typed settings object, read from the environment (prefix CAREWATCH_) and `.env`."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CAREWATCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,  # a refused setting's message must not print the secrets
    )

    environment: Literal["development", "production"] = Field(
        "development",
        description="production refuses to start while a secret is empty, a dev-only default"
        " or too short (ack and device secrets), or while a provider that is not a local fake"
        " has empty or demo credentials",
    )

    namespace: str = Field(
        "cw",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="name of this deployment: prefixes ingest's MQTT client ids and its Redis"
        " keys, so two deployments on one Mosquitto and one Redis never take each other's"
        " sessions or keys (docs/deployment.md: give each its own MQTT listeners and Redis"
        " database too)",
    )

    # --- infrastructure -------------------------------------------------------------
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/carewatch",
        description="libpq connection string of the carewatch database",
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    nats_url: str = "nats://127.0.0.1:4222"
    bus_backend: Literal["redis", "nats"] = "redis"
    bus_shards: int = Field(8, ge=1, le=1024, description="number of events.{shard} streams")
    bus_telemetry_per_message: int = Field(
        10,
        ge=1,
        le=100,
        description="most telemetry readings ingest puts in one bus message (a batch per"
        " shard and micro-batch, docs/adr/0006-telemetry-batches-on-the-bus.md); a"
        " telemetry stream keeps this many times fewer entries, so about as many readings;"
        " 1 sends one per message, as before that ADR: for a rolling upgrade while rules"
        " workers older than it still run",
    )
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_share_group: str = Field(
        "",
        description="empty (the default, and the only safe choice with Mosquitto): each ingest"
        " lane reads one persistent session with a plain subscription, held by one instance at"
        " a time through a lease; set a group only for a broker that restores shared"
        " subscriptions and never routes to offline members (docs/reliability.md)",
    )
    mqtt_mount_point: str = Field(
        "",
        description="the `mount_point` of this deployment's broker listeners when several"
        " deployments share one Mosquitto (e.g. siteb/); ingest removes it from received"
        " topics where the broker leaves it in (Mosquitto 2.0.11, fixed in 2.0.12)",
    )
    mqtt_session_expiry_s: int = Field(
        7 * 86400,
        ge=60,
        description="how long the broker keeps an ingest session (subscription and queued"
        " uplinks) while no ingest instance is connected to it",
    )
    mqtt_tls: bool = Field(
        False,
        description="connect to the broker over TLS (ingest, gateways); point mqtt_port at the"
        " broker's TLS listener, usually 8883",
    )
    mqtt_ca_file: str | None = Field(
        None,
        description="CA bundle (PEM) the broker's certificate must chain to; unset: the system's",
    )
    mqtt_device_secret: SecretStr = Field(
        SecretStr("dev-only-device-secret"),
        description="provisioning secret from which each device's MQTT password is derived",
    )

    # --- ingest ---------------------------------------------------------------------
    ingest_batch_size: int = Field(
        1000,
        ge=1,
        description="most messages per ingest micro-batch and per telemetry write; each write"
        " costs ~1 ms of ingest CPU whatever its size, so bigger batches are cheaper per message",
    )
    ingest_batch_ms: int = Field(
        200, ge=1, description="max wait before a telemetry batch is written"
    )
    ingest_telemetry_linger_ms: int = Field(
        20,
        ge=0,
        description="after a micro-batch shorter than ingest_batch_size, ingest's telemetry lane"
        " waits this long before taking the next, so that its per-batch Redis round trips are"
        " shared by more messages; the events lane (SOS) never waits",
    )
    ingest_lanes: Literal["all", "events", "telemetry"] = Field(
        "all",
        description="which of ingest's lanes this process runs (`carewatch ingest --lane`):"
        " `events` (SOS, falls, statuses: the alarm path) and `telemetry` (the bulk) in"
        " separate processes let the operating system run the alarm lane first",
    )
    bulk_lane_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="the niceness (at least) a process that runs only bulk work (`carewatch"
        " ingest --lane telemetry`, also the one `run-all` starts) gives itself at start, so"
        " that the alarm path gets the CPU first whenever both want it; 0 leaves its priority"
        " alone and keeps run-all's two ingest lanes in one process",
    )
    ingest_lease_ms: int = Field(
        3000,
        ge=300,
        description="an ingest instance holds a lane's MQTT session for this long unless it"
        " renews the lease; a standby instance takes over a dead holder's session after it",
    )
    max_payload_bytes: int = Field(65536, ge=256)
    ingest_dead_letters_per_device_hour: int = Field(
        100,
        ge=1,
        description="rejected messages of one device kept in dead_letters per hour; more are"
        " counted (carewatch_ingest_rejects_total) but not kept, so one device cannot fill it",
    )
    ingest_dead_letters_per_hour: int = Field(
        10_000, ge=1, description="rejected messages of all devices kept per hour, per lane"
    )
    dead_letter_retention_days: int = Field(
        30, ge=1, description="ingest deletes dead letters older than this"
    )
    dedup_ttl_s: int = Field(
        86400,
        ge=60,
        description="how long message ids (device, seq, device time) are remembered",
    )

    # --- rules ----------------------------------------------------------------------
    sos_cancel_window_s: float = Field(10.0, ge=0)
    fall_confirm_window_s: float = Field(30.0, ge=0)
    timer_poll_ms: int = Field(200, ge=10)
    rules_shard_lease_ms: int = Field(
        6000,
        ge=300,
        description="a rules worker owns a bus shard for this long unless it renews the lease;"
        " a dead worker's shards are taken over after it",
    )
    rules_view_cache_s: float = Field(
        5.0,
        ge=0,
        description="a rules worker decides telemetry on a cached view of the elder for up to"
        " this long: telemetry that decides nothing needs no database, but edits made outside"
        " the worker (care profiles, zones, operator acks) may reach such decisions this late;"
        " 0 disables the cache",
    )
    rules_telemetry_linger_ms: int = Field(
        50,
        ge=0,
        description="after a short batch from a telemetry lane, a rules worker waits this long"
        " before reading the lane again, so telemetry is taken in larger batches (the bus's"
        " per-batch cost dominates otherwise); device events (SOS) never wait",
    )

    # --- notifier -------------------------------------------------------------------
    escalation_wait_s: float = Field(
        120.0, ge=0, description="wait before the next escalation step"
    )
    outbox_poll_ms: int = Field(200, ge=10)
    outbox_max_attempts: int = Field(8, ge=1)
    outbox_backoff_base_s: float = Field(1.0, gt=0)
    outbox_retry_max_interval_s: float = Field(
        60.0,
        gt=0,
        description="retries of a failing notification back off up to this interval; alert"
        " messages of an open alert keep being retried at it past outbox_max_attempts",
    )
    outbox_lease_s: float = Field(
        30.0, gt=0, description="a claimed outbox row is retried after this if its sender died"
    )
    handler_remind_after_s: float = Field(
        600.0,
        gt=0,
        description="after an acknowledgement without 已到达 for this long, the person who"
        " acknowledged is reminded",
    )
    handler_escalate_after_s: float = Field(
        1200.0,
        gt=0,
        description="after an acknowledgement without 已到达 for this long, the nearest staffed"
        " station and the duty officer are alerted",
    )
    handler_press_min_interval_s: float = Field(
        60.0,
        ge=0,
        description="new SOS presses on an acknowledged alert are passed on to the person"
        " handling it at most once per this interval",
    )
    device_clock_max_skew_s: float = Field(
        300.0,
        gt=0,
        description="a device time behind the server's receive time by more than this (or"
        " ahead of it) is taken as a wrong device clock: messages say when the server"
        " received the event, and the latency histogram leaves it out",
    )
    ack_secret: SecretStr = Field(
        SecretStr("dev-only-change-me"), description="HMAC key of ack links; set it in production"
    )
    ack_base_url: str = "http://127.0.0.1:8081"
    ack_ttl_s: int = Field(24 * 3600, ge=60)
    ack_host: str = "127.0.0.1"
    ack_port: int = 8081

    # --- receipts, voice, repeats (issue 18; docs/channels.md) -------------------------
    callbacks_host: str = Field(
        "127.0.0.1", description="address the provider callbacks app (receipts, replies) listens on"
    )
    callbacks_port: int = Field(
        8083, description="port of the provider callbacks app (`carewatch provider-callbacks`)"
    )
    provider_callback_secret: SecretStr = Field(
        SecretStr("dev-only-callback-secret"),
        description="secret path segment of the receipt URLs registered at the provider"
        " (/callbacks/{secret}/aliyun/...); a push to any other path is refused",
    )
    voice_enabled: bool = Field(
        True, description="critical alerts may ring phones (Aliyun voice service)"
    )
    voice_quiet_start: str = Field(
        "22:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="start of the night window (local HH:MM) in which critical alerts also call",
    )
    voice_quiet_end: str = Field(
        "07:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="end of the night window; equal to the start: no night window",
    )
    voice_sms_confirm_s: float = Field(
        120.0,
        gt=0,
        description="a critical alert SMS not reported delivered within this long is followed by"
        " a call to the same person",
    )
    voice_max_calls: int = Field(
        3, ge=1, description="calls nobody answers before a voice notification moves on"
    )
    voice_redial_s: float = Field(60.0, ge=0, description="wait before calling again")
    escalation_repeat_count: int = Field(
        3,
        ge=0,
        description="critical alerts repeat their last step (voice included) this many times"
        " until someone acknowledges; 0: no repeats",
    )
    escalation_repeat_interval_s: float = Field(
        300.0, gt=0, description="wait before each repeat of the last step"
    )

    # --- operator API (operator_api) ---------------------------------------------------
    operator_host: str = "127.0.0.1"
    operator_port: int = Field(8082, description="operator API and the grid worker page (/m)")
    console_tile_url: str = Field(
        "",
        pattern=r"^(https?://[^\s\"'<>;,]+)?$",
        description="XYZ tile URL of the console's map, with {z} {x} {y} (and {s} for"
        " subdomains a b c), e.g. a 天地图 or an in-house tile server; empty: no tiles, the"
        " map shows the elder's position on a plain background",
    )
    console_tile_crs: Literal["wgs84", "gcj02"] = Field(
        "wgs84",
        description="datum of those tiles: wgs84 for 天地图 (CGCS2000) and OpenStreetMap-style"
        " servers, gcj02 for AMap/Gaode and Tencent tiles (positions are converted)",
    )
    console_tile_attribution: str = Field(
        "", max_length=200, description="text credit the tile provider requires, shown on the map"
    )
    console_reopen_hours: float = Field(
        24.0, gt=0, description="a closed alert can be reopened from the console this long"
    )

    # --- providers (Aliyun SMS, WeCom); tests and the demo point them at fakes -------
    aliyun_sms_endpoint: str = "http://127.0.0.1:8090/aliyun-sms/"
    aliyun_access_key_id: str = "demo-key-id"
    aliyun_access_key_secret: SecretStr = SecretStr("demo-key-secret")
    aliyun_sms_sign_name: str = "智慧养老"
    aliyun_sms_template_alert: str = "SMS_CW_ALERT"
    aliyun_sms_template_handled: str = "SMS_CW_HANDLED"
    aliyun_sms_template_reply: str = Field(
        "SMS_CW_REPLY", description="template of the answer to an SMS reply (回复1 / 回复2)"
    )
    aliyun_voice_endpoint: str = "http://127.0.0.1:8090/aliyun-voice/"
    aliyun_voice_show_number: str = Field(
        "", description="CalledShowNumber of voice calls; empty: the provider's public numbers"
    )
    aliyun_voice_tts_alert: str = Field(
        "TTS_CW_ALERT", description="TTS template of the alert call (IvrCall StartCode)"
    )
    aliyun_voice_tts_key1: str = Field(
        "TTS_CW_KEY1", description="TTS template played after key 1 (我来处理)"
    )
    aliyun_voice_tts_key2: str = Field(
        "TTS_CW_KEY2", description="TTS template played after key 2 (转给下一位)"
    )
    aliyun_voice_tts_update: str = Field(
        "TTS_CW_UPDATE", description="TTS template of a status call (SingleCallByTts)"
    )
    tencent_sms_endpoint: str = Field(
        "http://127.0.0.1:8090/tencent-sms/",
        description="Tencent Cloud SMS API (https://sms.tencentcloudapi.com/ in production)",
    )
    tencent_secret_id: str = Field("demo-tencent-id", description="Tencent Cloud SecretId")
    tencent_secret_key: SecretStr | None = Field(
        None,
        description="Tencent Cloud API key; set: SMS the primary (Aliyun) refuses or times out"
        " on goes by Tencent Cloud instead; unset: no failover",
    )
    tencent_sms_region: str = "ap-guangzhou"
    tencent_sms_app_id: str = Field("1400000000", description="SmsSdkAppId")
    tencent_sms_sign_name: str = "智慧养老"
    tencent_sms_template_alert: str = "1000001"
    tencent_sms_template_update: str = "1000002"
    tencent_sms_template_reply: str = "1000003"
    sms_failover_unsure_s: float = Field(
        60.0,
        ge=0,
        description="an SMS whose primary attempt may have been accepted, and that cannot be"
        " looked up at the primary, goes by the secondary after this long (maybe twice)",
    )
    wecom_base_url: str = "http://127.0.0.1:8090/wecom"
    wecom_corp_id: str = "demo-corp"
    wecom_corp_secret: SecretStr = SecretStr("demo-corp-secret")
    wecom_agent_id: int = 1000002
    wecom_callback_token: SecretStr = Field(
        SecretStr("demo-callback-token"),
        description="the Token of the app's 接收消息 (callback) settings: signs WeCom's pushes",
    )
    wecom_encoding_aes_key: SecretStr = Field(
        SecretStr("ZGVtby1vbmx5LWVuY29kaW5nLWFlcy1rZXktMzJieXQ"),
        description="the EncodingAESKey (43 characters) of the app's 接收消息 settings:"
        " decrypts WeCom's pushes",
    )
    provider_timeout_s: float = Field(5.0, gt=0)

    # --- device gateways (gateways/, docs/gateways.md) ------------------------------
    gateway_serve: str = Field(
        "watch-tcp,iw-tcp,ctwing,onenet",
        description="what `carewatch gateway` serves when no protocol is named: a comma list"
        " of watch-tcp, iw-tcp, ctwing, onenet",
    )
    gateway_host: str = Field(
        "127.0.0.1", description="address the gateways listen on (0.0.0.0 for devices outside)"
    )
    gateway_watch_port: int = Field(8001, description="TCP port of the 3G/4G watch protocol")
    gateway_iw_port: int = Field(8002, description="TCP port of the IW watch protocol")
    gateway_http_port: int = Field(
        8093, description="HTTP port of the CTWing and OneNET push endpoints"
    )
    gateway_max_connections: int = Field(
        20000, ge=1, description="watch TCP connections per gateway process, over all ports"
    )
    gateway_idle_timeout_s: float = Field(
        600.0, gt=0, description="a watch connection silent this long is closed"
    )
    gateway_login_timeout_s: float = Field(
        30.0, gt=0, description="a TCP connection must identify itself within this"
    )
    gateway_max_frame_bytes: int = Field(
        8192, ge=256, description="longest watch frame accepted; longer ones are dropped"
    )
    onenet_token: SecretStr | None = Field(
        None,
        description="token of the OneNET push (URL verification and msg_signature); unset:"
        " the OneNET endpoint refuses every request",
    )

    # --- locale ---------------------------------------------------------------------
    timezone: str = Field(
        "Asia/Shanghai", description="local time zone: station duty hours, times in messages"
    )

    # --- observability --------------------------------------------------------------
    metrics_port: int = Field(0, ge=0, description="0 disables the /metrics listener")
    metrics_host: str = Field(
        "127.0.0.1", description="address /metrics listens on (0.0.0.0 for a remote Prometheus)"
    )
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, data: Any) -> Any:
        """An empty secret or non-text value (`CAREWATCH_WECOM_AGENT_ID=` in an env file
        made from the example) means "not set": the default applies, and production then
        refuses a default secret. Plain text settings keep "" (an empty
        CAREWATCH_MQTT_SHARE_GROUP means plain subscriptions)."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            k: v
            for k, v in data.items()
            if not (v == "" and k in fields and fields[k].annotation is not str)
        }

    @model_validator(mode="after")
    def _tile_url_placeholders(self) -> Settings:
        url = self.console_tile_url
        if url and not all(p in url for p in ("{z}", "{x}", "{y}")):
            raise ValueError("CAREWATCH_CONSOLE_TILE_URL needs {z}, {x} and {y}")
        return self

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            problems = production_secret_problems(self)
            if problems:
                raise ValueError(
                    "production refuses to start: " + "; ".join(problems) + " (docs/security.md)"
                )
        return self


# The roots of trust: every ack link and every device password is an HMAC under these,
# and the provider callbacks' URLs (receipts, replies, keypresses that acknowledge) are
# guarded by the third alone.
ROOT_SECRETS = ("ack_secret", "mqtt_device_secret", "provider_callback_secret")
ROOT_SECRET_MIN_CHARS = 16
# provider endpoint setting -> the credentials it needs when it is a real provider
PROVIDER_CREDENTIALS = {
    "aliyun_sms_endpoint": ("aliyun_access_key_id", "aliyun_access_key_secret"),
    # the callback keys too: with the repository's demo values anyone could forge a press
    "wecom_base_url": (
        "wecom_corp_id",
        "wecom_corp_secret",
        "wecom_callback_token",
        "wecom_encoding_aes_key",
    ),
}


def is_local_url(url: str) -> bool:
    """A URL on this host (the fake providers of tests and the demo), not a real provider."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def production_secret_problems(settings: Settings) -> list[str]:
    """What keeps these settings from production, one clause per setting (empty: none)."""
    fields = type(settings).model_fields

    def problem(name: str) -> str | None:
        value = getattr(settings, name)
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        default = fields[name].default
        default_text = default.get_secret_value() if isinstance(default, SecretStr) else default
        env = f"CAREWATCH_{name.upper()}"
        if not text.strip():
            return f"{env} is empty"
        if text == default_text:
            return f"{env} is unset, empty or still the dev-only default"
        if name in ROOT_SECRETS and len(text) < ROOT_SECRET_MIN_CHARS:
            return f"{env} is shorter than {ROOT_SECRET_MIN_CHARS} characters"
        return None

    names = list(ROOT_SECRETS)
    for endpoint, credentials in PROVIDER_CREDENTIALS.items():
        if not is_local_url(getattr(settings, endpoint)):
            names.extend(credentials)
    return [p for p in map(problem, names) if p is not None]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
