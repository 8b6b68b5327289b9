-- materialized: table
-- description: Shipments, weight and declared value per ship date, carrier and origin region.
SELECT
    ship_date,
    carrier_code,
    origin_region,
    COUNT(*) AS shipments,
    SUM(weight_kg) AS total_weight_kg,
    SUM(declared_value) AS total_declared_value
FROM silver.shipments_enriched
GROUP BY ship_date, carrier_code, origin_region
