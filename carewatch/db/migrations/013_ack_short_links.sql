-- Short ack links for SMS: Aliyun caps a template variable at 35 characters and wants a
-- link's domain fixed in the template, so an SMS carries /a/{code} and the ack server
-- resolves the code to the signed token here. The token still decides everything
-- (signature, expiry, single use per action); expires_at is the token's own expiry,
-- kept for pruning.
CREATE TABLE ack_short_links (
    code        text PRIMARY KEY,
    token       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ack_short_links_expires ON ack_short_links (expires_at);
