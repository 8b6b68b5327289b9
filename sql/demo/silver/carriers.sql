-- materialized: table
-- description: Carriers with upper-case codes.
SELECT
    carrier_id,
    UPPER(TRIM(carrier_code)) AS carrier_code,
    carrier_name,
    mode,
    modified_at
FROM bronze.carriers
WHERE _run_id = {{ run_id }}
