-- Operator tokens are scoped to a region node (070) instead of a district name. Tokens
-- made before keep working: a district name becomes that district's node (created if
-- no grid names it yet: the token then sees nothing, as before), '*' the city.
-- `scope` stays as the label the token was created with. Grid-worker tokens follow
-- their worker's grid node at request time; admin tokens have no node.
ALTER TABLE api_tokens ADD COLUMN region_id bigint REFERENCES regions(id);
UPDATE api_tokens SET region_id = CASE
        WHEN scope = '*' THEN carewatch_city_region()
        ELSE carewatch_place_region(scope, NULL, NULL)
    END
 WHERE role = 'operator';
ALTER TABLE api_tokens ADD CHECK (role <> 'operator' OR region_id IS NOT NULL);
