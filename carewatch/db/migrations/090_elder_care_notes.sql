-- Medical notes and care needs of an elder (医疗与照护需求), from the office ledger
-- (registry/chinese.py): allergies, medicines, conditions, mobility, the key holder
-- (who can open the door) and free notes. One row per elder that has any; shown to
-- responders (the console's alert card, the ack page of whoever acknowledged, the
-- elder endpoint), never put in an SMS. The key holder's phone is masked like every
-- other phone number (docs/security.md).
CREATE TABLE elder_care_notes (
    elder_id          text PRIMARY KEY REFERENCES elders(id) ON DELETE CASCADE,
    allergies         text,
    medications       text,
    conditions        text,
    mobility          text CHECK (mobility IN ('自理', '需搀扶', '轮椅', '卧床')),
    key_holder_name   text,
    key_holder_phone  text,
    notes             text,
    CHECK ((key_holder_name IS NULL) = (key_holder_phone IS NULL))
);
