-- The ledger as street offices keep it (registry/chinese.py): gender, the ID card number
-- masked (region code and last four characters only, never the full number: see
-- docs/registry.md), the community (社区/村) an elder belongs to, and the two care types
-- offices list besides the existing ones. The new profiles use the detectors' defaults.
ALTER TABLE elders
    ADD COLUMN gender text CHECK (gender IN ('男', '女')),
    ADD COLUMN id_card_masked text CHECK (id_card_masked ~ '^[0-9]{6}\*{8}[0-9]{3}[0-9X]$'),
    ADD COLUMN community text;

INSERT INTO care_profiles (id, name) VALUES
    ('empty_nest', '空巢'),
    ('left_behind', '留守')
ON CONFLICT (id) DO NOTHING;
