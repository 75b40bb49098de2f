-- Devices that do not speak carewatch's own MQTT contract reach it through a gateway
-- (gateways/, docs/gateways.md). protocol: NULL = native MQTT; otherwise the gateway
-- that terminates it. imei: what the device or its platform identifies it by (a watch's
-- IMEI or 10-digit id, a CTWing IMEI, a OneNET dev_id); product: the platform product
-- whose field mapping (gateway_product_fields) applies.
ALTER TABLE devices
    ADD COLUMN protocol text CHECK (protocol IN ('watch3g', 'iw', 'ctwing', 'onenet')),
    ADD COLUMN imei     text,
    ADD COLUMN product  text;
-- One id per protocol: a watch that logs in as X is exactly one device.
CREATE UNIQUE INDEX devices_protocol_login ON devices (protocol, imei)
    WHERE protocol IS NOT NULL;

-- Which platform field means what, per product: data, not code (gateways/products.py).
CREATE TABLE gateway_product_fields (
    platform     text NOT NULL CHECK (platform IN ('ctwing', 'onenet')),
    product      text NOT NULL,
    field        text NOT NULL,
    meaning      text NOT NULL CHECK (meaning IN (
                     'smoke', 'gas', 'leak', 'sos', 'fall', 'battery', 'hr', 'temp', 'presence')),
    alarm_values text[] NOT NULL DEFAULT '{}',  -- for alarm meanings: values that raise it
    PRIMARY KEY (platform, product, field)
);
