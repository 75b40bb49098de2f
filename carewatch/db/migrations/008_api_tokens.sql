-- Operator API tokens. Only the sha256 of a token is stored: the token itself is shown
-- once, when it is created (operator_api.tokens.create_token).
--   operator:    scope = a district name, or '*' for every district
--   grid_worker: subject_id = grid_workers.id; sees the elders of that worker's grid
--   admin:       everything, phone numbers unmasked
CREATE TABLE api_tokens (
    token_hash  text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    role        text NOT NULL CHECK (role IN ('operator', 'grid_worker', 'admin')),
    subject_id  text NOT NULL,                 -- who holds it: grid worker id, operator login
    scope       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK (role <> 'operator' OR scope IS NOT NULL)
);
CREATE INDEX api_tokens_subject ON api_tokens (role, subject_id);
