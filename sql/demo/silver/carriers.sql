-- materialized: table
-- description: Carriers with upper-case codes.
-- expect: carrier_id unique fail; row_count >= 1 fail
SELECT
    carrier_id,
    UPPER(TRIM(carrier_code)) AS carrier_code,
    carrier_name,
    mode,
    modified_at
FROM bronze.carriers
WHERE _run_id = {{ run_id }}
