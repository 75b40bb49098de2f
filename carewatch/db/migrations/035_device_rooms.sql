-- A home sensor's room (卧室, 卫生间, 客厅, 厨房, 门口...: rules_engine/home_routine.py), from the
-- ledger's sensors column (kind:device_id@room), and the kinds of sign of life that homes
-- really have: generic contacts, light switches, smart plugs and the electricity meter.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS room text;
ALTER TABLE devices DROP CONSTRAINT IF EXISTS devices_kind_check;
ALTER TABLE devices ADD CONSTRAINT devices_kind_check CHECK (kind IN (
    'wristband', 'pir', 'door', 'water_meter', 'radar', 'smoke', 'gas', 'leak',
    'contact', 'switch', 'plug', 'power_meter'));
