-- materialized: table
-- description: Warehouses; unknown capacity stays NULL.
-- expect: capacity_m3 not_null drop
SELECT
    warehouse_id,
    warehouse_code,
    city,
    country,
    UPPER(region) AS region,
    capacity_m3,
    modified_at
FROM bronze.warehouses
WHERE _run_id = {{ run_id }}
