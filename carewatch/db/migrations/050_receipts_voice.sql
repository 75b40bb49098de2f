-- Issue 18: provider receipts drive escalation, and a voice channel.
--
-- A notification now learns what became of it after the provider accepted it: the SMS
-- delivery report (SmsReport) or the voice call report (VoiceReport) pushed to us
-- (notifier.provider_callbacks). receipt: delivered | failed (SMS), answered | unanswered
-- | key1 | key2 (voice); receipt_code: the provider's code (err_code / status_code);
-- receipt_at: the provider's report time. calls_unanswered counts the calls of a voice
-- notification nobody picked up (it is redialled up to voice_max_calls).
ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_channel_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_channel_check
    CHECK (channel IN ('sms', 'wecom', 'downlink', 'voice'));
ALTER TABLE notifications ADD COLUMN receipt text;
ALTER TABLE notifications ADD COLUMN receipt_code text;
ALTER TABLE notifications ADD COLUMN receipt_at timestamptz;
ALTER TABLE notifications ADD COLUMN calls_unanswered int NOT NULL DEFAULT 0;
-- The OutId the provider echoes in its reports (notifier.channels.base.out_id_for): a
-- report can arrive before the sender has recorded the provider's message id.
ALTER TABLE notifications ADD COLUMN out_id text;
UPDATE notifications SET out_id = CASE WHEN length(idempotency_key) <= 64 THEN idempotency_key
    ELSE encode(sha256(convert_to(idempotency_key, 'UTF8')), 'hex') END;
CREATE INDEX notifications_out_id ON notifications (out_id);

-- Every push a provider made, by its own identity: pushes are at-least-once (the provider
-- retries on anything but a timely 200), so a repeated one is recognised and ignored.
CREATE TABLE provider_receipts (
    kind         text NOT NULL,          -- sms_report | voice_report | sms_up
    receipt_key  text NOT NULL,          -- biz_id+out_id / call_id / phone+sequence_id
    received_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL,          -- what it did: recorded | unmatched | acknowledged ...
    payload      jsonb NOT NULL,
    PRIMARY KEY (kind, receipt_key)
);
CREATE INDEX provider_receipts_received ON provider_receipts (received_at);
