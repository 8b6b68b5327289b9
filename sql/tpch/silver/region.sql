-- materialized: table
-- description: TPC-H regions of this run's snapshot, char padding removed.
-- expect: region_key unique fail; region_key not_null fail; region_name not_null fail; row_count >= 1 fail
SELECT
    r_regionkey AS region_key,
    RTRIM(r_name) AS region_name,
    r_comment AS comment
FROM bronze.region
WHERE _run_id = {{ run_id }}
