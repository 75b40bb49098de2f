-- 定期巡访 (visits/, docs/visits.md): a grid worker's check-in after a visit, a phone call,
-- or a knock nobody answered. A check-in with the elder ('visited', 'phoned') is a sign of
-- life for the operator side (operator_api/elders.py LIFE_JOINS) and resets the days since
-- the last visit in the visit list; 'not_home' is kept (and shown) but is neither.
CREATE TABLE visit_checkins (
    id        bigserial PRIMARY KEY,
    elder_id  text NOT NULL REFERENCES elders(id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    outcome   text NOT NULL CHECK (outcome IN ('visited', 'phoned', 'not_home')),
    actor     text NOT NULL,                          -- 'grid_worker:GW1', as alert_events.actor
    note      text NOT NULL DEFAULT '' CHECK (length(note) <= 500)
);
CREATE INDEX visit_checkins_elder ON visit_checkins (elder_id, at DESC);
CREATE INDEX visit_checkins_at ON visit_checkins (at);
