-- Rules engine bookkeeping: exactly-once effects over an at-least-once bus.

-- Events whose effects the rules engine has committed; a redelivery finds its id here
-- and applies nothing twice.
CREATE TABLE rules_seen_events (
    event_id  text PRIMARY KEY,           -- Event.id
    seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rules_seen_events_seen_at ON rules_seen_events (seen_at);

-- Alert changes, written in the transaction that made them and published on the
-- `alerts` stream after commit. A row left unpublished (crash between commit and
-- publish) is published again; consumers deduplicate by change_id.
CREATE TABLE rules_outbox (
    change_id     text PRIMARY KEY,       -- AlertChange.id "{alert_id}:{status}:{version}"
    source        text NOT NULL,          -- the Event.id or rule_timers.id that caused it
    body          bytea NOT NULL,         -- the encoded AlertChange
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX rules_outbox_source ON rules_outbox (source);
CREATE INDEX rules_outbox_unpublished ON rules_outbox (created_at) WHERE published_at IS NULL;
