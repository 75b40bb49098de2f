-- Ingest deletes dead letters older than CAREWATCH_DEAD_LETTER_RETENTION_DAYS
-- (ingest/dead_letters.py): by age, so the age needs an index of its own.
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
