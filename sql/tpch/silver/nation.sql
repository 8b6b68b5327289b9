-- materialized: table
-- description: TPC-H nations of this run's snapshot, char padding removed.
-- expect: nation_key unique fail; nation_name not_null fail; region_key relationships silver.region.region_key fail
SELECT
    n_nationkey AS nation_key,
    RTRIM(n_name) AS nation_name,
    n_regionkey AS region_key,
    n_comment AS comment
FROM bronze.nation
WHERE _run_id = {{ run_id }}
