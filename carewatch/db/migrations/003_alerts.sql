-- Alerts with a full audit timeline, escalation state and the notification outbox.
CREATE TABLE alerts (
    id               uuid PRIMARY KEY,
    elder_id         text NOT NULL REFERENCES elders(id),
    device_id        text,
    kind             text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    status           text NOT NULL CHECK (status IN ('pending', 'open', 'acknowledged', 'resolved', 'cancelled', 'false_alarm')),
    source_event_id  text NOT NULL,           -- "{device_id}:{seq}" that opened it
    device_time      timestamptz NOT NULL,    -- device time of the opening event
    opened_at        timestamptz NOT NULL DEFAULT now(),
    confirmed_at     timestamptz,             -- pending -> open (confirmation window over)
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    closed_at        timestamptz,
    rule             text NOT NULL,           -- which rule fired
    threshold        jsonb NOT NULL DEFAULT '{}',
    confidence       real,
    details          jsonb NOT NULL DEFAULT '{}',
    updates          int NOT NULL DEFAULT 0,  -- repeats folded into this alert
    version          int NOT NULL DEFAULT 1
);
-- One open alert per (elder, kind): repeats update it.
CREATE UNIQUE INDEX alerts_one_open ON alerts (elder_id, kind)
    WHERE status IN ('pending', 'open', 'acknowledged');
CREATE UNIQUE INDEX alerts_source_event ON alerts (source_event_id, kind);
CREATE INDEX alerts_status ON alerts (status, opened_at DESC);

CREATE TABLE alert_events (
    id        bigserial PRIMARY KEY,
    alert_id  uuid NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,               -- 'rules', 'notifier', 'grid_worker:GW1', ...
    action    text NOT NULL,               -- opened, repeated, confirmed, cancelled, notified, acknowledged, ...
    details   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

-- Durable timers of the rules engine (confirmation windows, inactivity deadlines).
CREATE TABLE rule_timers (
    id         text PRIMARY KEY,            -- deterministic, e.g. "fall-confirm:{alert_id}"
    shard      int NOT NULL,
    elder_id   text NOT NULL,
    kind       text NOT NULL,
    due_at     timestamptz NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    fired_at   timestamptz
);
CREATE INDEX rule_timers_due ON rule_timers (shard, due_at) WHERE fired_at IS NULL;

CREATE TABLE escalations (
    alert_id       uuid PRIMARY KEY REFERENCES alerts(id) ON DELETE CASCADE,
    policy         text NOT NULL,
    step           int NOT NULL DEFAULT -1,   -- last step carried out
    next_step_at   timestamptz,               -- NULL: nothing left to do
    stopped_at     timestamptz,
    stopped_reason text
);
CREATE INDEX escalations_due ON escalations (next_step_at) WHERE next_step_at IS NOT NULL;

CREATE TABLE notifications (
    id                   bigserial PRIMARY KEY,
    idempotency_key      text NOT NULL UNIQUE,
    alert_id             uuid NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    step                 int NOT NULL,
    purpose              text NOT NULL DEFAULT 'alert',  -- alert | handled | closed
    channel              text NOT NULL CHECK (channel IN ('sms', 'wecom', 'downlink')),
    recipient_kind       text NOT NULL,   -- grid_worker | family | station | duty_officer | device
    recipient_id         text NOT NULL,
    recipient_name       text NOT NULL,
    address              text NOT NULL,   -- phone number, WeCom userid or device id
    params               jsonb NOT NULL DEFAULT '{}',
    status               text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'delivered', 'failed', 'cancelled')),
    attempts             int NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    last_error           text,
    provider_message_id  text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    delivered_at         timestamptz
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_alert ON notifications (alert_id);

-- Ack links already used for an action: a replayed link is refused.
CREATE TABLE ack_uses (
    token_id  text NOT NULL,
    action    text NOT NULL,
    used_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, action)
);
