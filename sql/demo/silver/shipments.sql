-- materialized: merge
-- unique_key: shipment_id
-- sequence_by: modified_at
-- description: One row per shipment: late updates and duplicates removed, status and weights cleaned.
-- expect: shipment_id not_null fail; status accepted_values ('NEW', 'SHIPPED', 'DELIVERED', 'CANCELLED') fail; weight_kg not_null warn
-- expect: weight_kg range 0 2000 warn; customer_id relationships silver.customers.customer_id warn
SELECT
    shipment_id,
    customer_id,
    carrier_id,
    origin_warehouse_id,
    UPPER(TRIM(destination_country)) AS destination_country,
    UPPER(TRIM(status)) AS status,
    CASE WHEN weight_kg < 0 THEN NULL ELSE weight_kg END AS weight_kg,
    declared_value,
    ship_date,
    promised_date,
    delivered_at,
    created_at,
    modified_at
FROM {{ unprocessed('bronze.shipments') }} AS s
