-- A reminder, or a severity raised by the rules engine (warning -> critical), starts a new
-- round of the escalation: the policy runs again from its first step, and notifications of
-- the new round have their own idempotency keys.
ALTER TABLE escalations ADD COLUMN round int NOT NULL DEFAULT 0;
