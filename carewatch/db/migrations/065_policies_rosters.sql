-- Issue 18: escalation policies, duty rosters and channel preferences as imported data
-- (notifier.policy_ledger; docs/policies.md). Each table is replaced as a whole by an
-- import of a file that holds it. Members and substitutes are checked against the
-- registry at import time, not by foreign keys: a registry re-import must not fail on
-- a roster, and a member gone from the registry simply reaches nobody.

-- One row per step; district / care_profile '' match any elder. Nothing imported: the
-- built-in policies (notifier.policies.POLICIES) apply.
CREATE TABLE escalation_policy_steps (
    district      text NOT NULL DEFAULT '',
    care_profile  text NOT NULL DEFAULT '',
    severity      text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    step          int NOT NULL CHECK (step >= 1),
    targets       text[] NOT NULL,          -- empty: a step that is skipped
    channels      text[] NOT NULL,
    wait_s        double precision CHECK (wait_s >= 0),  -- NULL: escalation_wait_s
    PRIMARY KEY (district, care_profile, severity, step)
);

-- When a grid worker or station is on duty (1 = Monday ... 7 = Sunday); a member with
-- no rows keeps its old hours (grid worker: always; station: duty_start..duty_end).
CREATE TABLE duty_shifts (
    id           bigserial PRIMARY KEY,
    member_kind  text NOT NULL CHECK (member_kind IN ('grid_worker', 'station')),
    member_id    text NOT NULL,
    weekdays     int[] NOT NULL,
    start_time   time NOT NULL,
    end_time     time NOT NULL
);
CREATE INDEX duty_shifts_member ON duty_shifts (member_kind, member_id);

-- Leave (days inclusive) and who stands in for the member's shifts meanwhile.
CREATE TABLE duty_leaves (
    id             bigserial PRIMARY KEY,
    member_kind    text NOT NULL CHECK (member_kind IN ('grid_worker', 'station')),
    member_id      text NOT NULL,
    first_day      date NOT NULL,
    last_day       date NOT NULL CHECK (last_day >= first_day),
    substitute_id  text
);
CREATE INDEX duty_leaves_member ON duty_leaves (member_kind, member_id);

-- The channels a phone number's owner accepts (no row: every channel the policy uses
-- that reaches them; SMS never to a landline; calls only for critical alerts).
CREATE TABLE channel_preferences (
    phone          text PRIMARY KEY,
    channels       text[] NOT NULL,
    voice_for_all  boolean NOT NULL DEFAULT false
);
