-- Alert changes the notifier has already acted on: a redelivered AlertChange (bus
-- reclaim, duplicate publish) is recognised by its id and skipped, in the same
-- transaction as its side effects.
CREATE TABLE notifier_inbox (
    change_id     text PRIMARY KEY,
    alert_id      uuid NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifier_inbox_processed ON notifier_inbox (processed_at);
