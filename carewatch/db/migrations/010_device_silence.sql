-- The rules engine looks every minute for wristbands silent too long
-- (rules_engine/device_sweep.py): keep that a range scan over the silent ones.
CREATE INDEX devices_wristband_last_seen ON devices (last_seen) WHERE kind = 'wristband';
