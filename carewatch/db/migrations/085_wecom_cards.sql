-- A WeCom alert goes as a template card with 我来处理 / 误报 buttons: its task_id finds the
-- notification when a button is pressed, its response_code (from message/send, one use,
-- 72 hours) lets us update the card to "已由XX处理" once someone has the alert.
ALTER TABLE notifications
    ADD COLUMN card_task_id text,
    ADD COLUMN card_response_code text,
    ADD COLUMN card_updated_at timestamptz;
CREATE UNIQUE INDEX notifications_card_task ON notifications (card_task_id)
    WHERE card_task_id IS NOT NULL;
-- the cards still to update (found by notifier.wecom_callback.CardUpdater's sweep)
CREATE INDEX notifications_card_due ON notifications (alert_id)
    WHERE card_response_code IS NOT NULL AND card_updated_at IS NULL;
