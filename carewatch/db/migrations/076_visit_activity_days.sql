-- The slow-decline signal's daily figures (visits/decline.py), kept once a day has ended:
-- the visit list reads 36 days of telemetry per elder, which for a grid of 200 elders with
-- per-minute wristbands is millions of rows per page load; a past day does not change
-- (a day is stored one hour after it ended, for late uploads). NULL: no reading of that
-- measure that day (a row of NULLs records a day without any).
CREATE TABLE visit_activity_days (
    elder_id     text NOT NULL REFERENCES elders(id) ON DELETE CASCADE,
    day          date NOT NULL,                     -- local day (the site's time zone)
    steps        double precision,
    motion       double precision,
    water        double precision,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (elder_id, day)
);
