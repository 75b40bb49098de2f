-- Issue 18: a provider's report is matched to its notification by the OutId we sent or
-- by the provider's message id (notifier.receipts._find: out_id = ... OR
-- provider_message_id = ...). Without an index on the second, the OR makes every report a
-- sequential scan of notifications; with both, a BitmapOr of two index scans. Partial:
-- most rows (WeCom, downlink, queued) have none.
CREATE INDEX IF NOT EXISTS notifications_provider_message_id
    ON notifications (provider_message_id) WHERE provider_message_id IS NOT NULL;
