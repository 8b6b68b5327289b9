-- materialized: table
-- description: TPC-H parts of this run's snapshot, char padding removed.
-- expect: part_key unique fail; size range 1 50 fail; retail_price range 0 * fail
SELECT
    p_partkey AS part_key,
    p_name AS part_name,
    RTRIM(p_mfgr) AS manufacturer,
    RTRIM(p_brand) AS brand,
    p_type AS part_type,
    p_size AS size,
    RTRIM(p_container) AS container,
    p_retailprice AS retail_price,
    p_comment AS comment
FROM bronze.part
WHERE _run_id = {{ run_id }}
