-- After an acknowledgement the notifier watches the person handling the alert (issue 14,
-- item 5): a new press by the elder is passed on to them, and if they do not mark 已到达
-- they are reminded, then others are alerted. presses_seen is the alerts.updates count
-- already acted on (NULL: the watch is not armed, the acknowledgement not handled yet);
-- handler_stage 0 nothing sent yet, 1 reminded, 2 escalated; handler_check_at when the
-- next arrival check is due; handler_notified_at the last message to the handler.
ALTER TABLE escalations ADD COLUMN presses_seen int;
ALTER TABLE escalations ADD COLUMN handler_stage int NOT NULL DEFAULT 0;
ALTER TABLE escalations ADD COLUMN handler_check_at timestamptz;
ALTER TABLE escalations ADD COLUMN handler_notified_at timestamptz;
CREATE INDEX escalations_handler_watch ON escalations (alert_id) WHERE presses_seen IS NOT NULL;
