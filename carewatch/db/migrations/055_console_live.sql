-- The dispatcher console's live queue (operator_api.live): every committed change to an
-- alert, its timeline, its escalation or its notifications is announced on the
-- 'carewatch_alert_changed' channel with the alert id as payload. PostgreSQL delivers a
-- NOTIFY only when the writing transaction commits and folds identical payloads of one
-- transaction into one, so a console hears each committed change once, whoever wrote it
-- (rules engine, notifier, ack app, operator API). Nobody listening costs next to nothing.
CREATE FUNCTION carewatch_announce_alert_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'alerts' THEN
        PERFORM pg_notify('carewatch_alert_changed', NEW.id::text);
    ELSE
        PERFORM pg_notify('carewatch_alert_changed', NEW.alert_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER alerts_announce AFTER INSERT OR UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION carewatch_announce_alert_change();
CREATE TRIGGER alert_events_announce AFTER INSERT ON alert_events
    FOR EACH ROW EXECUTE FUNCTION carewatch_announce_alert_change();
CREATE TRIGGER escalations_announce AFTER INSERT OR UPDATE ON escalations
    FOR EACH ROW EXECUTE FUNCTION carewatch_announce_alert_change();
CREATE TRIGGER notifications_announce AFTER INSERT OR UPDATE OF status ON notifications
    FOR EACH ROW WHEN (NEW.alert_id IS NOT NULL) EXECUTE FUNCTION carewatch_announce_alert_change();
