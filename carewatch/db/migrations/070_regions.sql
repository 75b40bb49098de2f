-- The region hierarchy (行政区划 and 网格): 市 -> 区县 -> 街道/乡镇 -> 社区/村 -> 网格, one
-- tree. Every API token, grid, station and duty officer hangs on a node of it, and a
-- caller sees what lies in the subtree of their node (operator_api.scope).
--
-- `path` is the materialised path of ids from the root, '/1/4/9/'; a node's subtree is
-- every node whose path starts with its path, one predicate on a C-collated btree:
-- `path LIKE '/1/4/%'`. Paths are written only by the trigger below (ids never
-- change), so callers only ever set parent_id.
--
-- There is one root, the city (its name: `carewatch registry regions import` with a
-- 市 column renames it; '全市' until then). A grid is named by its grid id (grids.id),
-- its display name stays in grids.name. The community level may be skipped: a grid of
-- an elder ledger without a 所属社区 hangs directly under its street.
CREATE TABLE regions (
    id         bigserial PRIMARY KEY,
    parent_id  bigint REFERENCES regions(id),
    level      text NOT NULL CHECK (level IN ('city', 'district', 'street', 'community', 'grid')),
    name       text NOT NULL CHECK (btrim(name) <> ''),
    path       text COLLATE "C" NOT NULL UNIQUE CHECK (path ~ '^/([0-9]+/)+$'),
    CHECK ((parent_id IS NULL) = (level = 'city'))
);
CREATE UNIQUE INDEX regions_one_city ON regions (level) WHERE level = 'city';
CREATE UNIQUE INDEX regions_child ON regions (COALESCE(parent_id, 0), level, name);

CREATE FUNCTION carewatch_region_rank(level text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_position(ARRAY['city', 'district', 'street', 'community', 'grid'], level)
$$;

-- A node's path from its parent's; a child sits at a deeper level than its parent (so
-- no node can move into its own subtree).
CREATE FUNCTION carewatch_region_path() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parent regions%ROWTYPE;
BEGIN
    IF NEW.parent_id IS NULL THEN
        NEW.path := '/' || NEW.id || '/';
        RETURN NEW;
    END IF;
    SELECT * INTO parent FROM regions WHERE id = NEW.parent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'region parent % does not exist', NEW.parent_id;
    END IF;
    IF carewatch_region_rank(parent.level) >= carewatch_region_rank(NEW.level) THEN
        RAISE EXCEPTION 'a % cannot lie under a %', NEW.level, parent.level;
    END IF;
    NEW.path := parent.path || NEW.id || '/';
    RETURN NEW;
END $$;
CREATE TRIGGER regions_path BEFORE INSERT OR UPDATE OF parent_id ON regions
    FOR EACH ROW EXECUTE FUNCTION carewatch_region_path();

-- A node that moved takes its subtree along.
CREATE FUNCTION carewatch_region_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE regions SET path = NEW.path || substr(path, length(OLD.path) + 1)
     WHERE path LIKE OLD.path || '%' AND id <> NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER regions_moved AFTER UPDATE OF parent_id ON regions
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path)
    EXECUTE FUNCTION carewatch_region_moved();

-- The child of `parent` at `lvl` named `nm`, created if missing (parent NULL: the city).
CREATE FUNCTION carewatch_region_child(parent bigint, lvl text, nm text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    found bigint;
BEGIN
    nm := btrim(nm);
    SELECT id INTO found FROM regions
     WHERE COALESCE(parent_id, 0) = COALESCE(parent, 0) AND level = lvl AND name = nm;
    IF found IS NULL THEN
        INSERT INTO regions (parent_id, level, name) VALUES (parent, lvl, nm)
            ON CONFLICT DO NOTHING RETURNING id INTO found;
        IF found IS NULL THEN  -- created meanwhile by a concurrent transaction
            SELECT id INTO found FROM regions
             WHERE COALESCE(parent_id, 0) = COALESCE(parent, 0) AND level = lvl AND name = nm;
        END IF;
    END IF;
    RETURN found;
END $$;

-- The city: the one root.
CREATE FUNCTION carewatch_city_region() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    found bigint;
BEGIN
    SELECT id INTO found FROM regions WHERE level = 'city';
    IF found IS NULL THEN
        INSERT INTO regions (parent_id, level, name) VALUES (NULL, 'city', '全市')
            ON CONFLICT DO NOTHING;
        SELECT id INTO found FROM regions WHERE level = 'city';
    END IF;
    RETURN found;
END $$;

-- The district node of `district`, and below it the street (and community) if given:
-- the node a grid, station or duty officer of that place hangs on.
CREATE FUNCTION carewatch_place_region(district text, street text, community text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    node bigint := carewatch_region_child(carewatch_city_region(), 'district', district);
BEGIN
    IF NULLIF(btrim(street), '') IS NOT NULL THEN
        node := carewatch_region_child(node, 'street', street);
        IF NULLIF(btrim(community), '') IS NOT NULL THEN
            node := carewatch_region_child(node, 'community', community);
        END IF;
    END IF;
    RETURN node;
END $$;

INSERT INTO regions (parent_id, level, name) VALUES (NULL, 'city', '全市');
