-- Registry: the elder ledger (老年人信息台账) and the care network around each elder.
CREATE TABLE care_profiles (
    id          text PRIMARY KEY,            -- 'elderly_80plus' (高龄), 'alone' (独居), ...
    name        text NOT NULL,               -- Chinese display name
    thresholds  jsonb NOT NULL DEFAULT '{}', -- overrides of detector defaults
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE grids (
    id        text PRIMARY KEY,
    name      text NOT NULL,
    district  text NOT NULL,
    street    text NOT NULL
);

CREATE TABLE grid_workers (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    phone         text NOT NULL,
    wecom_userid  text,
    grid_id       text NOT NULL REFERENCES grids(id)
);
CREATE INDEX grid_workers_grid ON grid_workers (grid_id);

CREATE TABLE stations (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('street_centre', 'community_station', 'village_point')),
    district      text NOT NULL,
    street        text,
    lat           double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon           double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    phone         text,
    wecom_userid  text,
    staffed       boolean NOT NULL DEFAULT true,
    duty_start    time NOT NULL DEFAULT '08:00',
    duty_end      time NOT NULL DEFAULT '20:00'
);
CREATE INDEX stations_district ON stations (district);

CREATE TABLE duty_officers (
    id            text PRIMARY KEY,
    district      text NOT NULL,
    name          text NOT NULL,
    phone         text NOT NULL,
    wecom_userid  text
);
CREATE INDEX duty_officers_district ON duty_officers (district);

CREATE TABLE elders (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    phone            text,
    district         text NOT NULL,
    street           text NOT NULL,
    address          text,
    lat              double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon              double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    grid_id          text NOT NULL REFERENCES grids(id),
    care_profile_id  text REFERENCES care_profiles(id),
    lives_alone      boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX elders_grid ON elders (grid_id);

CREATE TABLE contacts (
    id            bigserial PRIMARY KEY,
    elder_id      text NOT NULL REFERENCES elders(id) ON DELETE CASCADE,
    priority      int NOT NULL CHECK (priority >= 1),   -- 1 = first family contact
    name          text NOT NULL,
    relation      text NOT NULL,
    phone         text NOT NULL,
    wecom_userid  text,
    UNIQUE (elder_id, priority)
);

CREATE TABLE devices (
    id          text PRIMARY KEY,
    elder_id    text NOT NULL REFERENCES elders(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('wristband', 'pir', 'door', 'water_meter', 'radar', 'smoke', 'gas', 'leak')),
    last_seen   timestamptz,
    last_seq    bigint,
    online      boolean NOT NULL DEFAULT false,
    battery     int
);
CREATE INDEX devices_elder ON devices (elder_id);

INSERT INTO care_profiles (id, name) VALUES
    ('standard', '普通'),
    ('elderly_80plus', '高龄'),
    ('alone', '独居'),
    ('disabled', '失能'),
    ('cognitive', '认知障碍');
