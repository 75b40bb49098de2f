-- Grids, stations and duty officers on the region tree (070). Whoever writes these
-- tables (the ledger import, SQL by hand, test fixtures) gets the nodes for free: a
-- trigger creates or matches the district, street (and community) nodes from the
-- row's own columns, so the tree never disagrees with the registry.
--
-- A grid's node is a 'grid' node named by the grid id, under its community (the
-- ledger's 所属社区 of its elders) or, without one, under its street. A grid whose
-- district, street or community changes moves its node (and so its elders, workers
-- and tokens) at once. A station hangs on its street (or district), a duty officer on
-- the district.
ALTER TABLE grids
    ADD COLUMN community text,
    ADD COLUMN region_id bigint UNIQUE REFERENCES regions(id);
ALTER TABLE stations ADD COLUMN region_id bigint REFERENCES regions(id);
ALTER TABLE duty_officers ADD COLUMN region_id bigint REFERENCES regions(id);

CREATE FUNCTION carewatch_place_grid() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parent bigint := carewatch_place_region(NEW.district, NEW.street, NEW.community);
BEGIN
    IF NEW.region_id IS NULL AND TG_OP = 'INSERT' THEN
        -- an upsert of a known grid (INSERT ... ON CONFLICT DO UPDATE) proposes a row
        -- first: keep the grid's node, or its move would leave a twin behind
        SELECT region_id INTO NEW.region_id FROM grids WHERE id = NEW.id;
    END IF;
    IF NEW.region_id IS NULL THEN
        NEW.region_id := carewatch_region_child(parent, 'grid', NEW.id);
    ELSE
        UPDATE regions SET parent_id = parent
         WHERE id = NEW.region_id AND parent_id IS DISTINCT FROM parent;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER grids_region BEFORE INSERT OR UPDATE OF district, street, community, region_id
    ON grids FOR EACH ROW EXECUTE FUNCTION carewatch_place_grid();

CREATE FUNCTION carewatch_place_station() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.region_id := carewatch_place_region(NEW.district, NEW.street, NULL);
    RETURN NEW;
END $$;
CREATE TRIGGER stations_region BEFORE INSERT OR UPDATE OF district, street, region_id
    ON stations FOR EACH ROW EXECUTE FUNCTION carewatch_place_station();

CREATE FUNCTION carewatch_place_officer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.region_id := carewatch_place_region(NEW.district, NULL, NULL);
    RETURN NEW;
END $$;
CREATE TRIGGER duty_officers_region BEFORE INSERT OR UPDATE OF district, region_id
    ON duty_officers FOR EACH ROW EXECUTE FUNCTION carewatch_place_officer();

-- Today's registry onto the tree: a grid's community is the one its elders agree on.
UPDATE grids g SET community = (
    SELECT min(e.community) FROM elders e WHERE e.grid_id = g.id
    HAVING count(DISTINCT e.community) = 1 AND count(*) = count(e.community)
);
UPDATE grids SET region_id = NULL;
UPDATE stations SET region_id = NULL;
UPDATE duty_officers SET region_id = NULL;
ALTER TABLE grids ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE stations ALTER COLUMN region_id SET NOT NULL;
ALTER TABLE duty_officers ALTER COLUMN region_id SET NOT NULL;
CREATE INDEX stations_region ON stations (region_id);
