-- Aliyun SendSms is not idempotent: an attempt whose outcome is unknown (a timeout after
-- the request went out, a sender killed mid-send) may have been accepted, and resending it
-- blindly sends the SMS twice. attempt_started_at marks the attempt in flight (cleared when
-- its outcome is recorded); a claim that finds it still set knows the previous attempt
-- died unrecorded. unsure_since is the start of the first attempt that may have been
-- accepted: before resending, the sender looks the OutId up among that phone's sends
-- since then (QuerySendDetails).
ALTER TABLE notifications ADD COLUMN attempt_started_at timestamptz;
ALTER TABLE notifications ADD COLUMN unsure_since timestamptz;
